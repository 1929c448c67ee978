package wal

import (
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// writeLog makes a closed log in a new directory with records 1..n and returns the
// directory and the segment paths, oldest first.
func writeLog(t *testing.T, n uint64, segBytes int64) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentBytes: segBytes})
	appendN(t, l, 1, n)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	firsts, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range firsts {
		paths = append(paths, filepath.Join(dir, segName(f)))
	}
	return dir, paths
}

// recordOffsets returns the offset of each record in a segment file and its end.
func recordOffsets(t *testing.T, path string) []int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	offs := []int64{}
	for off := segHeaderSize; off < len(b); {
		_, _, size, st := parseFrame(b[off:])
		if st != frameOK {
			t.Fatalf("%s: bad frame at %d", path, off)
		}
		offs = append(offs, int64(off))
		off += size
	}
	return append(offs, int64(len(b)))
}

// TestTornTail cuts the last segment at every length inside its last record: each
// time exactly that record is dropped and the log takes appends again.
func TestTornTail(t *testing.T) {
	const n = 30
	dir, paths := writeLog(t, n, 1<<20)
	last := paths[len(paths)-1]
	offs := recordOffsets(t, last)
	start, end := offs[len(offs)-2], offs[len(offs)-1]
	if end-start < 20 {
		t.Fatalf("last record is only %d bytes; pick another count", end-start)
	}
	orig, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	for cut := start; cut < end; cut++ {
		if err := os.WriteFile(last, orig[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("cut at %d (record spans %d..%d): %v", cut, start, end, err)
		}
		if l.LastSeq() != n-1 {
			t.Fatalf("cut at %d: LastSeq %d, want %d", cut, l.LastSeq(), n-1)
		}
		checkRange(t, readAll(t, l, 1), 1, n-1)
		appendN(t, l, n, n)
		checkRange(t, readAll(t, l, 1), 1, n)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRecoverTail covers what may follow the last good record: the log keeps every
// good record and cuts what is garbage, or refuses to open with ErrCorrupt.
func TestRecoverTail(t *testing.T) {
	const n = 40
	zeros := func(k int) []byte { return make([]byte, k) }
	for _, tc := range []struct {
		name    string
		edit    func(t *testing.T, b []byte, offs []int64) []byte
		wantErr bool
		wantN   uint64 // LastSeq after recovery
	}{
		{"clean", func(t *testing.T, b []byte, offs []int64) []byte { return b }, false, n},
		{"zeros after last record", func(t *testing.T, b []byte, offs []int64) []byte {
			return append(b, zeros(5000)...)
		}, false, n},
		{"garbage after last record", func(t *testing.T, b []byte, offs []int64) []byte {
			return append(b, "\x10\x00\x00\x00not a record at all, just bytes"...)
		}, false, n},
		{"zeros over the last record", func(t *testing.T, b []byte, offs []int64) []byte {
			copy(b[offs[n-1]+3:], zeros(len(b)))
			return b
		}, false, n - 1},
		{"flipped byte in the last record", func(t *testing.T, b []byte, offs []int64) []byte {
			b[offs[n-1]+frameHeaderSize-1] ^= 0x40
			return b
		}, false, n - 1},
		{"flipped byte in a middle record", func(t *testing.T, b []byte, offs []int64) []byte {
			mid := (offs[n/2] + offs[n/2+1]) / 2
			b[mid] ^= 0x01
			return b
		}, true, 0},
		{"flipped length of a middle record", func(t *testing.T, b []byte, offs []int64) []byte {
			b[offs[n/2]] ^= 0x08
			return b
		}, true, 0},
		{"zeros over a middle record", func(t *testing.T, b []byte, offs []int64) []byte {
			copy(b[offs[n/2]:offs[n/2+1]], zeros(len(b)))
			return b
		}, true, 0},
		{"a record repeated", func(t *testing.T, b []byte, offs []int64) []byte {
			return append(b, b[offs[n-1]:offs[n]]...)
		}, true, 0},
		{"bad header", func(t *testing.T, b []byte, offs []int64) []byte {
			b[3] ^= 0xff
			return b
		}, true, 0},
		{"header cut", func(t *testing.T, b []byte, offs []int64) []byte { return b[:segHeaderSize-1] }, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, paths := writeLog(t, n, 1<<20)
			if len(paths) != 1 {
				t.Fatalf("%d segments, want 1", len(paths))
			}
			offs := recordOffsets(t, paths[0])
			b, err := os.ReadFile(paths[0])
			if err != nil {
				t.Fatal(err)
			}
			b = tc.edit(t, b, offs)
			if err := os.WriteFile(paths[0], b, 0o644); err != nil {
				t.Fatal(err)
			}
			l, err := Open(dir, Options{})
			if tc.wantErr {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Open: %v, want ErrCorrupt", err)
				}
				after, rerr := os.ReadFile(paths[0])
				if rerr != nil || string(after) != string(b) {
					t.Fatalf("a failed Open changed the segment (%v)", rerr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer l.Close()
			if l.LastSeq() != tc.wantN {
				t.Fatalf("LastSeq %d, want %d", l.LastSeq(), tc.wantN)
			}
			checkRange(t, readAll(t, l, 1), 1, tc.wantN)
			appendN(t, l, tc.wantN+1, tc.wantN+1)
			checkRange(t, readAll(t, l, 1), 1, tc.wantN+1)
		})
	}
}

// TestRecoverSealed: damage in a segment that is not the last is never a torn
// write, and a missing segment is a gap.
func TestRecoverSealed(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, paths []string)
	}{
		{"cut tail of a sealed segment", func(t *testing.T, paths []string) {
			st, err := os.Stat(paths[1])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(paths[1], st.Size()-3); err != nil {
				t.Fatal(err)
			}
		}},
		{"flipped byte in a sealed segment", func(t *testing.T, paths []string) {
			b, err := os.ReadFile(paths[0])
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)-1] ^= 0x10
			if err := os.WriteFile(paths[0], b, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"missing middle segment", func(t *testing.T, paths []string) {
			if err := os.Remove(paths[1]); err != nil {
				t.Fatal(err)
			}
		}},
		{"segment renamed", func(t *testing.T, paths []string) {
			first, _ := parseSegName(filepath.Base(paths[1]))
			if err := os.Rename(paths[1], filepath.Join(filepath.Dir(paths[1]), segName(first+1))); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, paths := writeLog(t, 100, 2000)
			if len(paths) < 3 {
				t.Fatalf("%d segments, want at least 3", len(paths))
			}
			tc.edit(t, paths)
			if _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestValidFrameAfter(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "x"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	good := appendFrame(nil, 9, []byte("payload"), crcOf([]byte("payload")))
	for _, tc := range []struct {
		name string
		b    []byte
		next uint64
		want bool
	}{
		{"zeros", make([]byte, 4096), 9, false},
		{"valid frame after junk", append([]byte("junkjunk"), good...), 9, true},
		{"valid frame of an older seq", append([]byte("junkjunk"), good...), 10, false},
		{"frame at offset 0 is the bad one itself", good, 9, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.Truncate(0); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(tc.b, 0); err != nil {
				t.Fatal(err)
			}
			got, err := validFrameAfter(f, 0, int64(len(tc.b)), tc.next)
			if err != nil || got != tc.want {
				t.Fatalf("validFrameAfter = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func crcOf(b []byte) uint32 { return crc32.Checksum(b, crcTable) }
