package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// recoverDir checks every segment of dir and returns them in order, the torn tail
// of the last one cut off.
func recoverDir(dir string, dur durability) ([]*segment, error) {
	firsts, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	segs := make([]*segment, 0, len(firsts))
	for i, first := range firsts {
		s, err := recoverSegment(filepath.Join(dir, segName(first)), first, i == len(firsts)-1, dur)
		if err != nil {
			return nil, err
		}
		if i > 0 && s.first != segs[i-1].last+1 {
			return nil, fmt.Errorf("segment %s starts at seq %d but the previous one ends at %d: %w",
				s.path, s.first, segs[i-1].last, ErrCorrupt)
		}
		segs = append(segs, s)
	}
	return segs, nil
}

// recoverSegment checks one segment and builds its index. Only in the last segment
// may a bad record be a torn write; it is cut off when no valid record follows it.
func recoverSegment(path string, first uint64, last bool, dur durability) (*segment, error) {
	flag := os.O_RDONLY
	if last {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open segment: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat segment: %w", err)
	}
	size := st.Size()
	h := make([]byte, segHeaderSize)
	if n, _ := f.ReadAt(h, 0); n < segHeaderSize {
		return nil, fmt.Errorf("segment %s: short header (%d bytes): %w", path, n, ErrCorrupt)
	}
	hfirst, err := decodeSegHeader(h)
	if err != nil {
		return nil, fmt.Errorf("segment %s: %v: %w", path, err, ErrCorrupt)
	}
	if hfirst != first {
		return nil, fmt.Errorf("segment %s: header names seq %d: %w", path, hfirst, ErrCorrupt)
	}
	s := &segment{first: first, last: first - 1, path: path}
	r := newFrameReader(f, segHeaderSize)
	var lastIndexed int64 = -indexEvery
	for {
		off := r.off
		seq, _, fs, err := r.next(size)
		if err != nil {
			return nil, fmt.Errorf("segment %s: %w", path, err)
		}
		if fs == frameShort && off == size {
			s.size = size
			return s, nil
		}
		if fs == frameOK {
			if seq != s.last+1 {
				return nil, fmt.Errorf("segment %s offset %d: seq %d where %d was expected: %w",
					path, off, seq, s.last+1, ErrCorrupt)
			}
			if off-lastIndexed >= indexEvery {
				s.index = append(s.index, indexEntry{seq: seq, off: off})
				lastIndexed = off
			}
			s.last = seq
			continue
		}
		// A bad or incomplete record at off.
		if !last {
			return nil, fmt.Errorf("segment %s offset %d: bad record in a sealed segment: %w", path, off, ErrCorrupt)
		}
		valid, err := validFrameAfter(f, off, size, s.last+1)
		if err != nil {
			return nil, fmt.Errorf("segment %s: %w", path, err)
		}
		if valid {
			return nil, fmt.Errorf("segment %s offset %d: bad record followed by valid ones: %w", path, off, ErrCorrupt)
		}
		if err := f.Truncate(off); err != nil {
			return nil, fmt.Errorf("segment %s: cut torn tail at %d: %w", path, off, err)
		}
		if err := dur.file(f); err != nil {
			return nil, fmt.Errorf("segment %s: cut torn tail at %d: %w", path, off, err)
		}
		s.size = off
		return s, nil
	}
}

// validFrameAfter reports whether a valid record with a seq at or after next starts
// anywhere in (off, size): if one does, the bad record at off is corruption inside
// the log, not a torn tail. Seqs further than the bytes could hold are skipped
// before checksumming, so scanning garbage or zeros costs one pass.
func validFrameAfter(f *os.File, off, size int64, next uint64) (bool, error) {
	rest := make([]byte, size-off)
	if n, err := f.ReadAt(rest, off); int64(n) < size-off {
		return false, fmt.Errorf("read tail at %d: %w", off, err)
	}
	maxSeqs := uint64(len(rest)/frameHeaderSize) + 1
	for p := 1; p+frameHeaderSize <= len(rest); p++ {
		n := binary.LittleEndian.Uint32(rest[p:])
		if n > MaxRecordBytes || p+frameHeaderSize+int(n) > len(rest) {
			continue
		}
		seq := binary.LittleEndian.Uint64(rest[p+8:])
		if seq < next || seq-next > maxSeqs {
			continue
		}
		data := rest[p+frameHeaderSize : p+frameHeaderSize+int(n)]
		if frameCRC(crc32.Checksum(data, crcTable), n, seq) == binary.LittleEndian.Uint32(rest[p+4:]) {
			return true, nil
		}
	}
	return false, nil
}
