package hnsw

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"unsafe"
)

// File format, version 2, little-endian:
//
//	magic "ANNSHNSW", u32 version
//	u32 dim, u32 metric, u32 M, u32 efConstruction, u32 efSearch, i64 seed
//	u32 quantization (0 None, 1 Int8); under Int8: dim x f32 offset, dim x f32 scale
//	u32 slots, u64 entry point ((level+1)<<32 | id, 0 when empty)
//	per node: u32 flags (0 or deleted), u64 key, u32 level,
//	          per layer 0..level: u32 count, count x u32 ids;
//	          dim x f32 vector
//	u32 CRC-32C of everything before it
//
// Free slots are left out and the nodes renumbered densely, so every node in a
// file costs at least its vector in bytes: Read never allocates much more than it
// has read. Tombstones are kept and links keep their order, so a loaded index has
// the same graph and returns the very same results. Vectors are always written as
// float32, so a file loads under either quantization (ReadWith); an Int8 index loaded
// under Int8 encodes them with the offsets and scales of the file, which WriteTo
// relearns from the data seen when it drifted. Version 1 is version 2 without the
// quantization field (None), and still read.
const (
	magic         = "ANNSHNSW"
	formatVersion = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Image is a consistent picture of an index at the moment Freeze returned, written
// by its WriteTo while Add, Delete, Vacuum and searches go on. It reads the live
// index, and three rules keep what it reads equal to that moment:
//   - slots allocated after the moment are left out, and no slot is freed or reused
//     while the image exists (Vacuum waits, Add allocates afresh), so every slot it
//     reads keeps its key, level and vector;
//   - a node tombstoned after the moment is recorded first (liveAtStart), and
//     written as live;
//   - a node whose links are about to change, and that the image has not written
//     yet, has its lists copied first (preserveLinks, under the node's lock, which
//     every change of a list holds), and the image writes the copy.
//
// So an image is exactly the index of that moment: the same keys, vectors, graph and
// entry point, and a loaded image answers every search as the index did then. The
// cost while it is written is the copies: about the lists that writers change ahead
// of the image's progress, each dropped once written.
type Image struct {
	x    *Index
	n    uint32       // slots allocated at the moment
	ep   uint64       // entry point at the moment
	qp   *quantParams // Int8: the parameters to write, relearned if the data drifted
	undo []uint32     // bit per slot < n: tombstoned after the moment
	next atomic.Uint32

	savedMu sync.Mutex
	saved   map[uint32][]uint32 // slot -> its lists at the moment, layer by layer: count, ids

	once sync.Once
}

// Freeze starts an Image of the index as it is now: it waits for the Add and
// Delete calls in flight, runs atomically (if not nil) while none runs, and lets
// them go on. The caller must Release the image. One image exists at a time:
// Freeze waits for the previous one to be released.
func (x *Index) Freeze(atomically func()) *Image {
	x.imgMu.Lock()
	x.structMu.Lock()
	n := x.nslots.Load()
	img := &Image{x: x, n: n, ep: x.ep.Load(), undo: make([]uint32, (n+31)/32), saved: map[uint32][]uint32{}}
	if x.quant {
		img.qp = x.relearned()
	}
	x.img.Store(img)
	if atomically != nil {
		atomically()
	}
	x.structMu.Unlock()
	return img
}

// Release ends the image: freed slots can be reused again. Calls after the first
// do nothing.
func (img *Image) Release() {
	img.once.Do(func() {
		img.x.img.Store(nil)
		img.x.imgMu.Unlock()
	})
}

// liveAtStart records that id, live now, is about to be tombstoned.
func (img *Image) liveAtStart(id uint32) {
	if id < img.n {
		atomic.OrUint32(&img.undo[id>>5], 1<<(id&31))
	}
}

// deletedAtStart reports whether id was a tombstone at the moment of the image,
// given its flags now. The flags are read before the record of liveAtStart, which
// is written before the flag: a tombstone set after the moment is always seen as
// such.
func (img *Image) deletedAtStart(id, flags uint32) bool {
	return flags&flagDeleted != 0 && atomic.LoadUint32(&img.undo[id>>5])&(1<<(id&31)) == 0
}

// preserveLinks is called with id's lock held, before any of its lists changes: if
// an image will still write id, it keeps a copy of the lists as they are.
func (x *Index) preserveLinks(s *searcher, id uint32) {
	img := x.img.Load()
	// next is advanced under the lock of the node written, so a node it has
	// passed is never copied in vain, and one it has not is always copied.
	if img == nil || id >= img.n || id < img.next.Load() {
		return
	}
	img.savedMu.Lock()
	defer img.savedMu.Unlock()
	if _, ok := img.saved[id]; !ok {
		img.saved[id] = x.appendLists(s, id, nil)
	}
}

// appendLists appends id's lists, layer 0 up: count, then ids. The caller holds
// id's lock.
func (x *Index) appendLists(s *searcher, id uint32, dst []uint32) []uint32 {
	for l := 0; l <= x.levelIn(s.tbl, id); l++ {
		w, base := x.listOf(s, id, l)
		dst = append(dst, w[base:base+1+int(w[base])]...)
	}
	return dst
}

// listsAtStart returns id's lists at the moment of the image and marks id written.
func (img *Image) listsAtStart(s *searcher, id uint32, buf []uint32) []uint32 {
	x := img.x
	mu := &s.chunkOf(x, id).locks[id&chunkMask]
	mu.Lock()
	defer mu.Unlock()
	img.next.Store(id + 1)
	img.savedMu.Lock()
	saved, ok := img.saved[id]
	delete(img.saved, id)
	img.savedMu.Unlock()
	if ok {
		return saved
	}
	return x.appendLists(s, id, buf[:0])
}

// WriteTo writes the index in the versioned binary format. It is a consistent
// snapshot (see Image); writers are held up only while it starts.
func (x *Index) WriteTo(w io.Writer) (int64, error) {
	img := x.Freeze(nil)
	defer img.Release()
	return img.WriteTo(w)
}

// encoder gathers the output in a buffer and checksums and writes it in blocks.
type encoder struct {
	w   io.Writer
	crc hash.Hash32
	buf []byte
	n   int64
	err error
}

const encodeBlock = 1 << 18

func (e *encoder) flush() {
	if e.err != nil || len(e.buf) == 0 {
		return
	}
	e.crc.Write(e.buf)
	n, err := e.w.Write(e.buf)
	e.n += int64(n)
	e.err = err
	e.buf = e.buf[:0]
}

func (e *encoder) u32(v uint32) { e.buf = binary.LittleEndian.AppendUint32(e.buf, v) }
func (e *encoder) u64(v uint64) { e.buf = binary.LittleEndian.AppendUint64(e.buf, v) }

// WriteTo writes the image in the versioned binary format. The index may change
// meanwhile; what is written is the index at the moment of Freeze.
func (img *Image) WriteTo(w io.Writer) (int64, error) {
	x := img.x
	e := &encoder{w: w, crc: crc32.New(castagnoli), buf: make([]byte, 0, encodeBlock+1<<16)}
	e.buf = append(e.buf, magic...)
	e.u32(formatVersion)
	e.u32(uint32(x.dim))
	e.u32(uint32(x.cfg.Metric))
	e.u32(uint32(x.m))
	e.u32(uint32(x.cfg.EfConstruction))
	e.u32(uint32(x.cfg.EfSearch))
	e.u64(uint64(x.cfg.Seed))
	if img.qp != nil {
		e.u32(uint32(Int8))
		e.buf = appendFloats(e.buf, img.qp.off)
		e.buf = appendFloats(e.buf, img.qp.scale)
	} else {
		// An Int8 index with no vector yet has nothing to learn from: None, which
		// loads the same (empty) under either setting.
		e.u32(uint32(NoQuantization))
	}
	s := x.getSearcher()
	defer x.putSearcher(s)
	n := img.n
	// Slots below n that are free now were free at the moment: none is freed or
	// reused while the image exists.
	const unused = math.MaxUint32
	renum := make([]uint32, n)
	var used uint32
	for id := range n {
		renum[id] = unused
		if s.flagsOf(x, id)&flagFree == 0 {
			renum[id] = used
			used++
		}
	}
	e.u32(used)
	ep := img.ep
	if ep != 0 {
		ep = ep&^0xffffffff | uint64(renum[uint32(ep)])
	}
	e.u64(ep)
	var lists []uint32
	var vec []float32
	if x.quant {
		vec = make([]float32, x.dim)
	}
	for id := range n {
		if renum[id] == unused {
			img.next.Store(id + 1)
			continue
		}
		var flags uint32
		if img.deletedAtStart(id, s.flagsOf(x, id)) {
			flags = flagDeleted
		}
		e.u32(flags)
		e.u64(x.keyIn(s.tbl, id))
		level := x.levelIn(s.tbl, id)
		e.u32(uint32(level))
		lists = img.listsAtStart(s, id, lists)
		for i := 0; i < len(lists); {
			cnt := int(lists[i])
			e.u32(uint32(cnt))
			for _, nb := range lists[i+1 : i+1+cnt] {
				// Lists of the moment link only to slots used then.
				if nb >= n || renum[nb] == unused {
					return e.n, fmt.Errorf("write index: slot %d links to slot %d, not in use", id, nb)
				}
				e.u32(renum[nb])
			}
			i += 1 + cnt
		}
		v, err := x.vectorOf(s, id, vec)
		if err != nil {
			return e.n, fmt.Errorf("write index: %w", err)
		}
		e.buf = appendFloats(e.buf, v)
		if len(e.buf) >= encodeBlock {
			e.flush()
		}
	}
	e.flush()
	e.buf = binary.LittleEndian.AppendUint32(e.buf, e.crc.Sum32())
	e.flush()
	if e.err != nil {
		return e.n, fmt.Errorf("write index: %w", e.err)
	}
	return e.n, nil
}

// appendFloats appends v as little-endian float32s.
func appendFloats(b []byte, v []float32) []byte {
	if littleEndian {
		return append(b, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*len(v))...)
	}
	for _, f := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return b
}

// littleEndian: the machine's float32s are already in the file's byte order.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// decoder reads the input through a large buffer and checksums each node's bytes
// once they are parsed, in one call.
type decoder struct {
	r   *bufio.Reader
	crc hash.Hash32
	err error
}

// decodeBuffer holds the largest node (links of every layer at MaxM, a vector of
// MaxDim) with room to spare.
const decodeBuffer = 1 << 20

// peek returns the next n bytes without consuming them.
func (d *decoder) peek(n int) []byte {
	if d.err != nil {
		return nil
	}
	b, err := d.r.Peek(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		d.err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		return nil
	}
	return b
}

// consume checksums and drops the next n bytes, which peek returned.
func (d *decoder) consume(n int) {
	b, _ := d.r.Peek(n)
	d.crc.Write(b)
	_, _ = d.r.Discard(n)
}

// take is peek and consume together: the returned bytes are valid until the next
// call.
func (d *decoder) take(n int) []byte {
	b := d.peek(n)
	if b != nil {
		d.consume(n)
	}
	return b
}

func (d *decoder) u32() uint32 {
	if b := d.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if b := d.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// Read reads an index written by WriteTo. Any malformed, truncated or
// checksum-failing input yields an error wrapping ErrCorrupt, never a panic; memory
// is allocated as data arrives, so a forged header cannot make it allocate much
// more than the input holds.
func Read(r io.Reader) (*Index, error) {
	x, err := read(r, nil)
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	return x, nil
}

// ReadOptions are the settings of a loaded index that its file does not fix.
type ReadOptions struct {
	// Quantization of the loaded index, whatever the file's: a file holds float32
	// vectors, and the graph is kept as written.
	Quantization Quantization
	// Rerank and VectorDir as in Config.
	Rerank    bool
	VectorDir string
}

// ReadWith is Read with the given options, instead of the file's quantization (and
// no re-ranking, the system's temporary directory).
func ReadWith(r io.Reader, o ReadOptions) (*Index, error) {
	x, err := read(r, &o)
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	return x, nil
}

func read(r io.Reader, o *ReadOptions) (x *Index, err error) {
	d := &decoder{r: bufio.NewReaderSize(r, decodeBuffer), crc: crc32.New(castagnoli)}
	mg := d.take(len(magic))
	if d.err != nil {
		return nil, d.err
	}
	if string(mg) != magic {
		return nil, corrupt("bad magic %q", mg)
	}
	version := d.u32()
	if d.err == nil && version != 1 && version != formatVersion {
		return nil, corrupt("unsupported version %d", version)
	}
	dim, metric, m, efc, efs := d.u32(), d.u32(), d.u32(), d.u32(), d.u32()
	seed := int64(d.u64())
	var fileQuant uint32
	if version >= 2 {
		fileQuant = d.u32()
	}
	if d.err != nil {
		return nil, d.err
	}
	if metric >= uint32(len(metricNames)) || efc > 1<<20 || efs > 1<<20 || efc == 0 || efs == 0 || seed == 0 ||
		fileQuant >= uint32(len(quantNames)) || dim == 0 || dim > MaxDim {
		return nil, corrupt("bad header")
	}
	var fileParams *quantParams
	if Quantization(fileQuant) == Int8 {
		fileParams = &quantParams{off: make([]float32, dim), scale: make([]float32, dim)}
		for _, p := range [][]float32{fileParams.off, fileParams.scale} {
			b := d.take(4 * int(dim))
			if b == nil {
				return nil, d.err
			}
			for i := range p {
				p[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
				if p[i]-p[i] != 0 {
					return nil, corrupt("NaN or Inf in the quantization parameters")
				}
			}
		}
		for _, sc := range fileParams.scale {
			if sc < 0 {
				return nil, corrupt("negative quantization scale")
			}
		}
	}
	nslots, ep := d.u32(), d.u64()
	if d.err != nil {
		return nil, d.err
	}
	cfg := Config{Dim: int(dim), Metric: Metric(metric), M: int(m), EfConstruction: int(efc), EfSearch: int(efs), Seed: seed,
		Quantization: Quantization(fileQuant)}
	if o != nil {
		cfg.Quantization, cfg.Rerank, cfg.VectorDir = o.Quantization, o.Rerank, o.VectorDir
	}
	if x, err = New(cfg); err != nil {
		if errors.Is(err, ErrConfig) {
			return nil, corrupt("bad config: %v", err)
		}
		return nil, err
	}
	made := x
	defer func() {
		if err != nil {
			made.Close() // its vector file, under Int8
		}
	}()
	if x.quant && fileParams != nil {
		x.qp.Store(fileParams)
	}
	if x.cfg.EfConstruction != int(efc) {
		return nil, corrupt("efConstruction %d below M %d", efc, m)
	}
	if nslots > math.MaxInt32 {
		return nil, corrupt("%d slots", nslots)
	}
	// Sized for the header's count up to a bound (a forged count costs at most that),
	// so a large index is not rehashed again and again as it loads.
	x.keys = make(map[uint64]uint32, min(nslots, 1<<20))
	s := x.getSearcher()
	defer x.putSearcher(s)
	vec := make([]float32, x.dim)
	vecBytes := 4 * x.dim
	var live, deleted int64
	for id := range nslots {
		// A node is parsed from peeked bytes, growing the peek as its layers
		// are read, and consumed (checksummed) whole at the end.
		head := d.peek(16)
		if head == nil {
			return nil, d.err
		}
		flags := binary.LittleEndian.Uint32(head)
		key := binary.LittleEndian.Uint64(head[4:])
		level := binary.LittleEndian.Uint32(head[12:])
		if flags != 0 && flags != flagDeleted {
			return nil, corrupt("slot %d: flags %#x", id, flags)
		}
		if level > maxLevel {
			return nil, corrupt("slot %d: level %d", id, level)
		}
		off := 16
		for l := 0; l <= int(level); l++ {
			maxM := x.m
			if l == 0 {
				maxM = x.m0
			}
			b := d.peek(off + 4)
			if b == nil {
				return nil, d.err
			}
			cnt := int(binary.LittleEndian.Uint32(b[off:]))
			if cnt > maxM {
				return nil, corrupt("slot %d layer %d: %d links", id, l, cnt)
			}
			off += 4 + 4*cnt
		}
		node := d.peek(off + vecBytes)
		if node == nil {
			return nil, d.err
		}
		for i := range vec {
			vec[i] = math.Float32frombits(binary.LittleEndian.Uint32(node[off+4*i:]))
			if f := vec[i]; f-f != 0 {
				return nil, corrupt("slot %d: NaN or Inf", id)
			}
		}
		if x.quant {
			x.observe(vec)
		}
		if got := x.allocSlot(key, vec, int(level), flags); got != id {
			return nil, corrupt("slot %d allocated as %d", id, got) // cannot happen: slots are sequential
		}
		if x.quant {
			if err := x.vf.write(id, vec); err != nil {
				return nil, err
			}
		}
		s.refresh(x)
		off = 16
		for l := 0; l <= int(level); l++ {
			w, base := x.listOf(s, id, l)
			cnt := int(binary.LittleEndian.Uint32(node[off:]))
			for i := 1; i <= cnt; i++ {
				nb := binary.LittleEndian.Uint32(node[off+4*i:])
				if nb >= nslots || nb == id {
					return nil, corrupt("slot %d layer %d: link to %d", id, l, nb)
				}
				w[base+i] = nb
			}
			w[base] = uint32(cnt)
			off += 4 + 4*cnt
		}
		d.consume(off + vecBytes)
		if flags == 0 {
			before := len(x.keys)
			x.keys[key] = id // one hash lookup: a repeated key leaves the length
			if len(x.keys) == before {
				return nil, corrupt("key %d appears twice", key)
			}
			live++
		} else {
			deleted++
		}
	}
	sum := d.crc.Sum32()
	if got := d.u32(); d.err != nil {
		return nil, d.err
	} else if got != sum {
		return nil, corrupt("checksum %#x, want %#x", got, sum)
	}
	if _, err := d.r.ReadByte(); err != io.EOF {
		return nil, corrupt("trailing data")
	}
	if err := x.checkGraph(s, ep); err != nil {
		return nil, err
	}
	if x.quant {
		x.adds.Store(int64(nslots))
		if fileParams == nil && nslots > 0 {
			// Encoded so far with what the first vectors gave: learn from them all.
			lo, hi := x.observed()
			if err := x.reencode(learnParams(lo, hi)); err != nil {
				return nil, err
			}
		}
	}
	x.live.Store(live)
	x.deleted.Store(deleted)
	x.ep.Store(ep)
	return x, nil
}

// checkGraph verifies what a search relies on: every link points to a used slot
// that has the layer, and the entry point is a used slot at its level, at or above
// every live node's. It is 0 only when no node is live: tombstones a Vacuum was
// about to free when the image was taken may be left above or without it. A file
// has no free slot, and read already checked that every link names a slot of the
// file other than its own, so layer 0 (most links, and each check a cache miss)
// needs nothing more; upper layers check the level of the node linked to.
func (x *Index) checkGraph(s *searcher, ep uint64) error {
	n := x.nslots.Load()
	top := -1 // highest level of a live node
	for id := range n {
		level := x.levelIn(s.tbl, id)
		if x.flagsIn(s.tbl, id) == 0 {
			top = max(top, level)
		}
		for l := 1; l <= level; l++ {
			w, base := x.listOf(s, id, l)
			for i := 1; i <= int(w[base]); i++ {
				if nb := w[base+i]; x.levelIn(s.tbl, nb) < l {
					return corrupt("slot %d layer %d: link to slot %d of level %d", id, l, nb, x.levelIn(s.tbl, nb))
				}
			}
		}
	}
	if ep == 0 {
		if top >= 0 {
			return corrupt("no entry point in an index with live nodes")
		}
		return nil
	}
	id, level := uint32(ep), int(ep>>32)-1
	if id >= n || x.levelIn(s.tbl, id) != level || level < top {
		return corrupt("bad entry point %d at level %d", id, level)
	}
	return nil
}

// SaveFile writes the index to path atomically: to a temporary file in the same
// directory, fsynced, then renamed over path, so a crash leaves the old file or
// the new one, never a torn one.
func (x *Index) SaveFile(path string) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = x.WriteTo(f); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	if dir, derr := os.Open(filepath.Dir(path)); derr == nil {
		// Persist the rename itself; not all filesystems support it, so best effort.
		_ = dir.Sync()
		dir.Close()
	}
	return nil
}

// LoadFile reads an index saved by SaveFile.
func LoadFile(path string) (*Index, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load index: %w", err)
	}
	defer f.Close()
	x, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("load index %s: %w", path, err)
	}
	return x, nil
}
