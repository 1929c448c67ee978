package hnsw

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"path/filepath"
	"slices"
	"testing"
)

// smallIndex builds an index with tombstones, free slots and an upsert, so the
// encoding covers every kind of slot.
func smallIndex(t testing.TB, n int, m Metric) (*Index, [][]float32) {
	t.Helper()
	data := clustered(5, n, 16, 5)
	x := build(t, Config{Dim: 16, M: 4, Metric: m, EfConstruction: 20}, data)
	for i := 0; i < n/4; i++ {
		if err := x.tombstone(uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	x.Vacuum()
	for i := n / 4; i < n/4+5 && i < n; i++ {
		if err := x.Delete(uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n > 0 {
		if err := x.Add(uint64(n-1), data[0]); err != nil {
			t.Fatal(err)
		}
	}
	return x, data
}

func encode(t testing.TB, x *Index) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := x.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo returned %d, wrote %d", n, buf.Len())
	}
	return buf.Bytes()
}

func TestSaveLoadRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		m    Metric
	}{
		{"empty", 0, L2},
		{"one", 1, L2},
		{"L2", 600, L2},
		{"Cosine", 600, Cosine},
		{"InnerProduct", 300, InnerProduct},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, data := smallIndex(t, tc.n, tc.m)
			path := filepath.Join(t.TempDir(), "idx")
			if err := x.SaveFile(path); err != nil {
				t.Fatal(err)
			}
			y, err := LoadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, y, false)
			if x.Len() != y.Len() || x.Config() != y.Config() {
				t.Fatalf("loaded Len %d cfg %+v, want %d %+v", y.Len(), y.Config(), x.Len(), x.Config())
			}
			if !bytes.Equal(encode(t, x), encode(t, y)) {
				t.Fatal("re-encoding the loaded index differs")
			}
			queries := clustered(6, 50, 16, 5)
			for _, q := range queries {
				a, err1 := x.Search(q, 10, SearchOptions{})
				b, err2 := y.Search(q, 10, SearchOptions{})
				if err1 != nil || err2 != nil {
					t.Fatal(err1, err2)
				}
				if !slices.Equal(a, b) {
					t.Fatalf("results differ after load:\n%v\n%v", a, b)
				}
			}
			// The loaded index keeps working: reuse of its free slots included.
			for i := range data {
				if err := y.Add(uint64(i), data[i]); err != nil {
					t.Fatal(err)
				}
			}
			if y.Len() != len(data) {
				t.Fatalf("Len %d after re-adding, want %d", y.Len(), len(data))
			}
		})
	}
}

// TestReadEveryTruncation: every proper prefix of a valid file is an error
// wrapping ErrCorrupt, never a panic or a silently smaller index.
func TestReadEveryTruncation(t *testing.T) {
	x, _ := smallIndex(t, 40, L2)
	b := encode(t, x)
	for n := 0; n < len(b); n++ {
		if _, err := Read(bytes.NewReader(b[:n])); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("prefix of %d/%d bytes: err = %v, want ErrCorrupt", n, len(b), err)
		}
	}
	if _, err := Read(bytes.NewReader(append(slices.Clip(b), 0))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing byte: err = %v, want ErrCorrupt", err)
	}
}

// TestReadFlippedBytes: any single flipped byte is caught (by the checksum if by
// nothing earlier).
func TestReadFlippedBytes(t *testing.T) {
	x, _ := smallIndex(t, 40, L2)
	b := encode(t, x)
	for i := range b {
		c := slices.Clone(b)
		c[i] ^= 0x40
		if _, err := Read(bytes.NewReader(c)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: err = %v, want ErrCorrupt", i, err)
		}
	}
}

// FuzzRead feeds arbitrary bytes to Read, which must never panic; what it accepts
// must be a working index.
func FuzzRead(f *testing.F) {
	x, _ := smallIndex(f, 30, L2)
	valid := encode(f, x)
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add(valid[:12])
	for _, i := range []int{9, 20, 60, 100, len(valid) - 3} {
		c := slices.Clone(valid)
		c[i] ^= 0xff
		f.Add(c)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		readAndUse(t, b)
		// Also with the checksum fixed up, so the fuzzer gets past it and exercises
		// the structural checks (links, levels, entry point, keys).
		if len(b) >= 4 {
			c := slices.Clone(b)
			binary.LittleEndian.PutUint32(c[len(c)-4:], crc32.Checksum(c[:len(c)-4], castagnoli))
			readAndUse(t, c)
		}
	})
}

func readAndUse(t *testing.T, b []byte) {
	y, err := Read(bytes.NewReader(b))
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v does not wrap ErrCorrupt", err)
		}
		return
	}
	q := make([]float32, y.Config().Dim)
	q[0] = 1
	if _, err := y.Search(q, 3, SearchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := y.Add(1<<40, q); err != nil {
		t.Fatal(err)
	}
	y.Keys(func(k uint64) bool { _ = y.Delete(k); return true })
	y.Vacuum()
}
