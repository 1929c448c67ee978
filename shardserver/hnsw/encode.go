package hnsw

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
)

// File format, version 1, little-endian:
//
//	magic "ANNSHNSW", u32 version
//	u32 dim, u32 metric, u32 M, u32 efConstruction, u32 efSearch, i64 seed
//	u32 slots, u64 entry point ((level+1)<<32 | id, 0 when empty)
//	per node: u32 flags (0 or deleted), u64 key, u32 level,
//	          per layer 0..level: u32 count, count x u32 ids;
//	          dim x f32 vector
//	u32 CRC-32C of everything before it
//
// Free slots are left out and the nodes renumbered densely, so every node in a
// file costs at least its vector in bytes: Read never allocates much more than it
// has read. Tombstones are kept and links keep their order, so a loaded index has
// the same graph and returns the very same results.
const (
	magic         = "ANNSHNSW"
	formatVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type encoder struct {
	w   *bufio.Writer
	crc hash.Hash32
	n   int64
	buf [8]byte
	err error
}

func (e *encoder) write(b []byte) {
	if e.err != nil {
		return
	}
	e.crc.Write(b)
	n, err := e.w.Write(b)
	e.n += int64(n)
	e.err = err
}

func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.buf[:4], v)
	e.write(e.buf[:4])
}

func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.buf[:8], v)
	e.write(e.buf[:8])
}

// WriteTo writes the index in the versioned binary format. It is a consistent
// snapshot: Add, Delete and Vacuum wait while it runs; searches do not.
func (x *Index) WriteTo(w io.Writer) (int64, error) {
	x.structMu.Lock()
	defer x.structMu.Unlock()
	e := &encoder{w: bufio.NewWriterSize(w, 1<<16), crc: crc32.New(castagnoli)}
	e.write([]byte(magic))
	e.u32(formatVersion)
	e.u32(uint32(x.dim))
	e.u32(uint32(x.cfg.Metric))
	e.u32(uint32(x.m))
	e.u32(uint32(x.cfg.EfConstruction))
	e.u32(uint32(x.cfg.EfSearch))
	e.u64(uint64(x.cfg.Seed))
	s := x.getSearcher()
	defer x.putSearcher(s)
	n := x.nslots.Load()
	renum := make([]uint32, n)
	var used uint32
	for id := range n {
		if x.flagsIn(s.tbl, id)&flagFree == 0 {
			renum[id] = used
			used++
		}
	}
	e.u32(used)
	ep := x.ep.Load()
	if ep != 0 {
		ep = ep&^0xffffffff | uint64(renum[uint32(ep)])
	}
	e.u64(ep)
	vb := make([]byte, 4*x.dim)
	for id := range n {
		flags := x.flagsIn(s.tbl, id)
		if flags&flagFree != 0 {
			continue
		}
		e.u32(flags)
		e.u64(x.keyIn(s.tbl, id))
		level := x.levelIn(s.tbl, id)
		e.u32(uint32(level))
		for l := 0; l <= level; l++ {
			lw, base := x.listOf(s, id, l)
			cnt := lw[base]
			e.u32(cnt)
			for i := 1; i <= int(cnt); i++ {
				e.u32(renum[lw[base+i]])
			}
		}
		for i, f := range x.vecIn(s.tbl, id) {
			binary.LittleEndian.PutUint32(vb[4*i:], math.Float32bits(f))
		}
		e.write(vb)
	}
	sum := e.crc.Sum32()
	e.u32(sum)
	if e.err == nil {
		e.err = e.w.Flush()
	}
	if e.err != nil {
		return e.n, fmt.Errorf("write index: %w", e.err)
	}
	return e.n, nil
}

type decoder struct {
	r   *bufio.Reader
	crc hash.Hash32
	buf [8]byte
	err error
}

func (d *decoder) read(b []byte) {
	if d.err != nil {
		clear(b)
		return
	}
	if _, err := io.ReadFull(d.r, b); err != nil {
		d.err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		clear(b)
		return
	}
	d.crc.Write(b)
}

func (d *decoder) u32() uint32 {
	d.read(d.buf[:4])
	return binary.LittleEndian.Uint32(d.buf[:4])
}

func (d *decoder) u64() uint64 {
	d.read(d.buf[:8])
	return binary.LittleEndian.Uint64(d.buf[:8])
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// Read reads an index written by WriteTo. Any malformed, truncated or
// checksum-failing input yields an error wrapping ErrCorrupt, never a panic; memory
// is allocated as data arrives, so a forged header cannot make it allocate much
// more than the input holds.
func Read(r io.Reader) (*Index, error) {
	x, err := read(r)
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	return x, nil
}

func read(r io.Reader) (*Index, error) {
	d := &decoder{r: bufio.NewReaderSize(r, 1<<16), crc: crc32.New(castagnoli)}
	var mg [len(magic)]byte
	d.read(mg[:])
	if d.err != nil {
		return nil, d.err
	}
	if string(mg[:]) != magic {
		return nil, corrupt("bad magic %q", mg[:])
	}
	if v := d.u32(); d.err == nil && v != formatVersion {
		return nil, corrupt("unsupported version %d", v)
	}
	dim, metric, m, efc, efs := d.u32(), d.u32(), d.u32(), d.u32(), d.u32()
	seed := int64(d.u64())
	nslots, ep := d.u32(), d.u64()
	if d.err != nil {
		return nil, d.err
	}
	if metric >= uint32(len(metricNames)) || efc > 1<<20 || efs > 1<<20 || efc == 0 || efs == 0 || seed == 0 {
		return nil, corrupt("bad header")
	}
	x, err := New(Config{Dim: int(dim), Metric: Metric(metric), M: int(m), EfConstruction: int(efc), EfSearch: int(efs), Seed: seed})
	if err != nil {
		return nil, corrupt("bad config: %v", err)
	}
	if x.cfg.EfConstruction != int(efc) {
		return nil, corrupt("efConstruction %d below M %d", efc, m)
	}
	if nslots > math.MaxInt32 {
		return nil, corrupt("%d slots", nslots)
	}
	s := x.getSearcher()
	defer x.putSearcher(s)
	vb := make([]byte, 4*x.dim)
	vec := make([]float32, x.dim)
	var live, deleted int64
	for id := range nslots {
		flags := d.u32()
		if d.err != nil {
			return nil, d.err
		}
		if flags != 0 && flags != flagDeleted {
			return nil, corrupt("slot %d: flags %#x", id, flags)
		}
		key := d.u64()
		level := d.u32()
		if d.err != nil {
			return nil, d.err
		}
		if level > maxLevel {
			return nil, corrupt("slot %d: level %d", id, level)
		}
		// Links are read before the vector; stage them in s.out.
		links := s.out[:0]
		for l := 0; l <= int(level); l++ {
			cnt := d.u32()
			maxM := x.m
			if l == 0 {
				maxM = x.m0
			}
			if d.err != nil {
				return nil, d.err
			}
			if int(cnt) > maxM {
				return nil, corrupt("slot %d layer %d: %d links", id, l, cnt)
			}
			links = append(links, pair{id: cnt})
			for range cnt {
				nb := d.u32()
				if nb >= nslots || nb == id {
					return nil, corrupt("slot %d layer %d: link to %d", id, l, nb)
				}
				links = append(links, pair{id: nb})
			}
		}
		s.out = links
		d.read(vb)
		if d.err != nil {
			return nil, d.err
		}
		for i := range vec {
			vec[i] = math.Float32frombits(binary.LittleEndian.Uint32(vb[4*i:]))
			if f := float64(vec[i]); math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, corrupt("slot %d: NaN or Inf", id)
			}
		}
		if got := x.allocSlot(key, vec, int(level), flags); got != id {
			return nil, corrupt("slot %d allocated as %d", id, got) // cannot happen: slots are sequential
		}
		s.refresh(x)
		li := 0
		for l := 0; l <= int(level); l++ {
			w, base := x.listOf(s, id, l)
			cnt := int(links[li].id)
			for i := 1; i <= cnt; i++ {
				w[base+i] = links[li+i].id
			}
			w[base] = uint32(cnt)
			li += cnt + 1
		}
		if flags == 0 {
			if _, dup := x.keys[key]; dup {
				return nil, corrupt("key %d appears twice", key)
			}
			x.keys[key] = id
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
	x.live.Store(live)
	x.deleted.Store(deleted)
	x.ep.Store(ep)
	return x, nil
}

// checkGraph verifies what a search relies on: every link points to a used slot
// that has the layer, and the entry point is a used slot at the top level.
func (x *Index) checkGraph(s *searcher, ep uint64) error {
	n := x.nslots.Load()
	used := func(id uint32) bool { return id < n && x.flagsIn(s.tbl, id)&flagFree == 0 }
	top := -1
	for id := range n {
		if !used(id) {
			continue
		}
		level := x.levelIn(s.tbl, id)
		top = max(top, level)
		for l := 0; l <= level; l++ {
			w, base := x.listOf(s, id, l)
			for i := 1; i <= int(w[base]); i++ {
				nb := w[base+i]
				if !used(nb) || x.levelIn(s.tbl, nb) < l {
					return corrupt("slot %d layer %d: link to unusable slot %d", id, l, nb)
				}
			}
		}
	}
	if ep == 0 {
		if top >= 0 {
			return corrupt("no entry point in a non-empty index")
		}
		return nil
	}
	id, level := uint32(ep), int(ep>>32)-1
	if !used(id) || x.levelIn(s.tbl, id) != level || level != top {
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
