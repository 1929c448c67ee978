package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

const (
	segMagic      = "ANNSWAL\x00"
	segVersion    = 1
	segHeaderSize = 32
	segSuffix     = ".wal"
	tmpSuffix     = ".tmp"

	// frameHeaderSize is len + crc + seq.
	frameHeaderSize = 16

	// MaxRecordBytes bounds one record's data. It keeps a corrupted length field from
	// making recovery allocate gigabytes, and is far above any request body a shard
	// accepts.
	MaxRecordBytes = 256 << 20

	// indexEvery is the spacing, in bytes, of the in-memory seq -> offset index of a
	// segment, so a reader starting mid-segment skips at most this much.
	indexEvery = 64 << 10
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// segName is the file name of the segment whose first record is first.
func segName(first uint64) string { return fmt.Sprintf("%020d%s", first, segSuffix) }

// parseSegName returns the first seq named by a segment file name.
func parseSegName(name string) (uint64, bool) {
	if len(name) != 20+len(segSuffix) || !strings.HasSuffix(name, segSuffix) {
		return 0, false
	}
	n, err := strconv.ParseUint(name[:20], 10, 64)
	return n, err == nil
}

func encodeSegHeader(first uint64) []byte {
	h := make([]byte, segHeaderSize)
	copy(h, segMagic)
	binary.LittleEndian.PutUint32(h[8:], segVersion)
	binary.LittleEndian.PutUint64(h[16:], first)
	binary.LittleEndian.PutUint32(h[24:], crc32.Checksum(h[:24], crcTable))
	return h
}

// decodeSegHeader checks a segment header and returns the first seq it names.
func decodeSegHeader(h []byte) (uint64, error) {
	if len(h) < segHeaderSize {
		return 0, fmt.Errorf("short segment header (%d bytes)", len(h))
	}
	if string(h[:8]) != segMagic {
		return 0, errors.New("bad segment magic")
	}
	if crc32.Checksum(h[:24], crcTable) != binary.LittleEndian.Uint32(h[24:]) {
		return 0, errors.New("bad segment header checksum")
	}
	if v := binary.LittleEndian.Uint32(h[8:]); v != segVersion {
		return 0, fmt.Errorf("unsupported segment version %d", v)
	}
	return binary.LittleEndian.Uint64(h[16:]), nil
}

// frameCRC finishes a record checksum: dataCRC is crc32c of the data, to which the
// length and seq are appended.
func frameCRC(dataCRC uint32, n uint32, seq uint64) uint32 {
	var b [12]byte
	binary.LittleEndian.PutUint32(b[0:], n)
	binary.LittleEndian.PutUint64(b[4:], seq)
	return crc32.Update(dataCRC, crcTable, b[:])
}

// appendFrame appends the framed record to dst. dataCRC must be crc32c of data.
func appendFrame(dst []byte, seq uint64, data []byte, dataCRC uint32) []byte {
	var h [frameHeaderSize]byte
	n := uint32(len(data))
	binary.LittleEndian.PutUint32(h[0:], n)
	binary.LittleEndian.PutUint32(h[4:], frameCRC(dataCRC, n, seq))
	binary.LittleEndian.PutUint64(h[8:], seq)
	dst = append(dst, h[:]...)
	return append(dst, data...)
}

// frameStatus is what parseFrame found at the start of a buffer.
type frameStatus uint8

const (
	frameOK    frameStatus = iota
	frameShort             // the buffer ends inside the frame
	frameBad               // length out of bounds or checksum mismatch
)

// parseFrame decodes the frame at the start of b. On frameOK it returns the seq, the
// data (aliasing b) and the frame's total size.
func parseFrame(b []byte) (seq uint64, data []byte, size int, st frameStatus) {
	if len(b) < frameHeaderSize {
		return 0, nil, 0, frameShort
	}
	n := binary.LittleEndian.Uint32(b[0:])
	if n > MaxRecordBytes {
		return 0, nil, 0, frameBad
	}
	size = frameHeaderSize + int(n)
	if len(b) < size {
		return 0, nil, 0, frameShort
	}
	seq = binary.LittleEndian.Uint64(b[8:])
	data = b[frameHeaderSize:size]
	if frameCRC(crc32.Checksum(data, crcTable), n, seq) != binary.LittleEndian.Uint32(b[4:]) {
		return 0, nil, 0, frameBad
	}
	return seq, data, size, frameOK
}

// frameReader decodes consecutive frames of a file through ReadAt with its own
// buffer, so many readers share a file without sharing an offset, and the end it may
// read up to can grow while it reads (the active segment of a followed log).
type frameReader struct {
	f     *os.File
	buf   []byte
	start int   // first unparsed byte in buf
	end   int   // end of valid bytes in buf
	off   int64 // file offset of buf[start]
}

func newFrameReader(f *os.File, off int64) *frameReader {
	return &frameReader{f: f, buf: make([]byte, 0, 64<<10), off: off}
}

// next decodes the frame at r.off, reading no byte at or past limit. It returns
// frameShort when the frame does not end before limit.
func (r *frameReader) next(limit int64) (seq uint64, data []byte, st frameStatus, err error) {
	for {
		seq, data, size, st := parseFrame(r.buf[r.start:r.end])
		switch st {
		case frameOK:
			r.start += size
			r.off += int64(size)
			return seq, data, frameOK, nil
		case frameBad:
			return 0, nil, frameBad, nil
		}
		need := frameHeaderSize
		if r.end-r.start >= frameHeaderSize {
			need = frameHeaderSize + int(binary.LittleEndian.Uint32(r.buf[r.start:]))
		}
		avail := r.off + int64(r.end-r.start)
		if avail >= limit || r.off+int64(need) > limit {
			return 0, nil, frameShort, nil
		}
		if err := r.fill(need, limit); err != nil {
			return 0, nil, frameShort, err
		}
	}
}

// fill reads more bytes, at least enough to hold need bytes from r.start when the
// file has them, without reading at or past limit.
func (r *frameReader) fill(need int, limit int64) error {
	have := r.end - r.start
	if r.start > 0 {
		copy(r.buf[:cap(r.buf)], r.buf[r.start:r.end])
		r.start, r.end = 0, have
	}
	want := max(need, 64<<10)
	if cap(r.buf) < want {
		nb := make([]byte, want)
		copy(nb, r.buf[:have])
		r.buf = nb
	}
	r.buf = r.buf[:cap(r.buf)]
	readEnd := min(int64(cap(r.buf)-have), limit-r.off-int64(have))
	n, err := r.f.ReadAt(r.buf[have:have+int(readEnd)], r.off+int64(have))
	r.end = have + n
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s: %w", r.f.Name(), err)
	}
	if n == 0 {
		// The file is shorter than limit says: the caller sees frameShort next.
		return errShortFile
	}
	return nil
}

var errShortFile = errors.New("file shorter than expected")

// listSegments returns the first seqs of the segment files in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var firsts []uint64
	for _, e := range ents {
		if first, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			firsts = append(firsts, first)
		}
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
	return firsts, nil
}

// durability makes the fsyncs of the log. Only tests turn it off (Options.noSync):
// the fuzz test exercises recovery logic, not the disk, and would otherwise run a
// few cases a second on a busy machine.
type durability struct{ off bool }

func (d durability) file(f *os.File) error {
	if d.off {
		return nil
	}
	return fdatasync(f)
}

func (d durability) dir(dir string) error {
	if d.off {
		return nil
	}
	return syncDir(dir)
}

// createFileAtomic writes content to dir/name through a fsynced temp file, a rename
// and a directory fsync, so the file exists complete or not at all.
func createFileAtomic(dir, name string, content []byte, dur durability) error {
	tmp := filepath.Join(dir, name+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	_, err = f.Write(content)
	if err == nil {
		err = dur.file(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err == nil {
		err = dur.dir(dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("create %s: %w", name, err)
	}
	return nil
}

// syncDir fsyncs a directory so that creations, renames and removals in it survive
// a machine crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
