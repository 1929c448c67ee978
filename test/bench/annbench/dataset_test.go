package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// record is one raw TEXMEX record: the declared dimension and its element bytes.
type record struct {
	dim  int32
	body []byte
}

// encodeRecords writes records in the TEXMEX layout, letting tests build malformed files.
func encodeRecords(recs []record) []byte {
	var b bytes.Buffer
	for _, r := range recs {
		_ = binary.Write(&b, binary.LittleEndian, r.dim)
		b.Write(r.body)
	}
	return b.Bytes()
}

func f32Record(v []float32) record {
	body := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(body[4*i:], math.Float32bits(x))
	}
	return record{dim: int32(len(v)), body: body}
}

func i32Record(v []int32) record {
	body := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(body[4*i:], uint32(x))
	}
	return record{dim: int32(len(v)), body: body}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeFvecs writes v as an .fvecs file and returns its path.
func writeFvecs(t *testing.T, name string, v *vectors) string {
	t.Helper()
	recs := make([]record, v.Len())
	for i := range recs {
		recs[i] = f32Record(v.Row(i))
	}
	return writeFile(t, name, encodeRecords(recs))
}

// writeIvecs writes g as an .ivecs file and returns its path.
func writeIvecs(t *testing.T, name string, g *groundTruth) string {
	t.Helper()
	recs := make([]record, g.Len())
	for i := range recs {
		recs[i] = i32Record(g.Row(i))
	}
	return writeFile(t, name, encodeRecords(recs))
}

func TestReadRoundTrip(t *testing.T) {
	want := &vectors{dim: 3, data: []float32{1, -2.5, 3e-7, float32(math.MaxFloat32), 0, -0.125}}
	t.Run("fvecs", func(t *testing.T) {
		got, err := readVectors(writeFvecs(t, "x.fvecs", want))
		if err != nil {
			t.Fatal(err)
		}
		if got.dim != want.dim || !slices.Equal(got.data, want.data) {
			t.Fatalf("got dim %d %v, want dim %d %v", got.dim, got.data, want.dim, want.data)
		}
	})
	t.Run("bvecs", func(t *testing.T) {
		raw := encodeRecords([]record{{dim: 4, body: []byte{0, 1, 128, 255}}, {dim: 4, body: []byte{7, 7, 7, 7}}})
		got, err := readVectors(writeFile(t, "x.BVECS", raw))
		if err != nil {
			t.Fatal(err)
		}
		if w := []float32{0, 1, 128, 255, 7, 7, 7, 7}; got.dim != 4 || !slices.Equal(got.data, w) {
			t.Fatalf("got dim %d %v, want dim 4 %v", got.dim, got.data, w)
		}
	})
	t.Run("ivecs", func(t *testing.T) {
		g := &groundTruth{width: 2, ids: []int32{5, 1, 0, 9, 3, 3}}
		got, err := readGroundTruth(writeIvecs(t, "gt.ivecs", g))
		if err != nil {
			t.Fatal(err)
		}
		if got.width != 2 || got.Len() != 3 || !slices.Equal(got.ids, g.ids) {
			t.Fatalf("got width %d %v, want 2 %v", got.width, got.ids, g.ids)
		}
	})
}

func TestReadMalformed(t *testing.T) {
	good := f32Record([]float32{1, 2})
	cases := []struct {
		name, file string
		data       []byte
		wantErr    string
	}{
		{"empty file", "e.fvecs", nil, "no records"},
		{"zero dimension", "z.fvecs", encodeRecords([]record{{dim: 0}}), "invalid dimension 0"},
		{"negative dimension", "n.fvecs", encodeRecords([]record{{dim: -3}}), "invalid dimension -3"},
		{"huge dimension", "h.fvecs", encodeRecords([]record{{dim: maxVecDim + 1}}), "invalid dimension"},
		{"truncated header", "th.fvecs", append(encodeRecords([]record{good}), 2, 0), "not a multiple"},
		{"truncated body", "tb.fvecs", encodeRecords([]record{good, {dim: 2, body: []byte{1, 2, 3}}}), "not a multiple"},
		{"mixed dimensions", "m.fvecs", encodeRecords([]record{good, f32Record([]float32{1, 2, 3, 4, 5, 6}), f32Record([]float32{1})}), "differs"},
		{"bvecs truncated", "b.bvecs", encodeRecords([]record{{dim: 3, body: []byte{1, 2}}}), "not a multiple"},
		{"unknown extension", "x.txt", encodeRecords([]record{good}), "unknown extension"},
		{"ivecs as vectors", "g.ivecs", encodeRecords([]record{good}), "unknown extension"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readVectors(writeFile(t, tc.file, tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		if _, err := readVectors(filepath.Join(t.TempDir(), "absent.fvecs")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("got %v, want a not-exist error", err)
		}
	})
	t.Run("ground truth truncated", func(t *testing.T) {
		raw := encodeRecords([]record{i32Record([]int32{1, 2, 3})})
		if _, err := readGroundTruth(writeFile(t, "g.ivecs", raw[:len(raw)-1])); err == nil || !strings.Contains(err.Error(), "not a multiple") {
			t.Fatalf("got %v, want a truncation error", err)
		}
	})
	t.Run("ground truth wrong extension", func(t *testing.T) {
		if _, err := readGroundTruth(writeFile(t, "g.fvecs", encodeRecords([]record{good}))); err == nil || !strings.Contains(err.Error(), "unknown extension") {
			t.Fatalf("got %v, want an extension error", err)
		}
	})
}

// TestDecodeRecordsUnsized covers streams without a known length (pipes), where a
// truncation is only found on reaching it.
func TestDecodeRecordsUnsized(t *testing.T) {
	good := f32Record([]float32{1, 2})
	cases := []struct {
		name    string
		data    []byte
		wantErr string
		wantN   int
	}{
		{"ok", encodeRecords([]record{good, good}), "", 4},
		{"truncated header", append(encodeRecords([]record{good}), 2, 0), "record 1: truncated header", 0},
		{"truncated body", encodeRecords([]record{good, {dim: 2, body: []byte{1, 2, 3}}}), "record 1: truncated", 0},
		{"header only", encodeRecords([]record{{dim: 2}}), "record 0: truncated", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, out, err := decodeRecords(bytes.NewReader(tc.data), -1, 4, func(dst []float32, src []byte) []float32 {
				n := len(dst)
				dst = grow(dst, len(src)/4)
				decodeFloat32s(dst[n:], src)
				return dst
			})
			if tc.wantErr == "" {
				if err != nil || len(out) != tc.wantN {
					t.Fatalf("got %d values, %v; want %d values", len(out), err, tc.wantN)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestGenerate(t *testing.T) {
	spec := genSpec{n: 500, dim: 24, clusters: 5, seed: 7}
	b1, q1 := generate(spec, 50)
	b2, q2 := generate(spec, 50)
	t.Run("shape", func(t *testing.T) {
		if b1.Len() != 500 || b1.dim != 24 || q1.Len() != 50 || q1.dim != 24 {
			t.Fatalf("got base %dx%d queries %dx%d", b1.Len(), b1.dim, q1.Len(), q1.dim)
		}
		for _, x := range append(slices.Clone(b1.data), q1.data...) {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("non-finite component %v", x)
			}
		}
	})
	t.Run("deterministic", func(t *testing.T) {
		if !slices.Equal(b1.data, b2.data) || !slices.Equal(q1.data, q2.data) {
			t.Fatal("same spec generated different data")
		}
	})
	t.Run("more queries keep the base and extend the queries", func(t *testing.T) {
		b3, q3 := generate(spec, 80)
		if !slices.Equal(b1.data, b3.data) || !slices.Equal(q1.data, q3.data[:len(q1.data)]) {
			t.Fatal("changing nq changed the base or the first queries")
		}
	})
	t.Run("seed matters", func(t *testing.T) {
		other := spec
		other.seed = 8
		b3, _ := generate(other, 50)
		if slices.Equal(b1.data, b3.data) {
			t.Fatal("different seeds generated the same base")
		}
	})
	t.Run("queries are not base vectors", func(t *testing.T) {
		for i := range q1.Len() {
			for j := range b1.Len() {
				if slices.Equal(q1.Row(i), b1.Row(j)) {
					t.Fatalf("query %d equals base vector %d", i, j)
				}
			}
		}
	})
	t.Run("clustered", func(t *testing.T) {
		// A vector's nearest neighbour should almost always share its cluster, so it lies
		// much closer than the average pair does.
		var nearest, all float64
		for i := range 100 {
			best := float32(math.MaxFloat32)
			for j := range b1.Len() {
				if j == i {
					continue
				}
				d := squaredL2(b1.Row(i), b1.Row(j))
				best = min(best, d)
				all += float64(d)
			}
			nearest += float64(best)
		}
		nearest /= 100
		all /= 100 * float64(b1.Len()-1)
		if nearest*3 > all {
			t.Fatalf("mean nearest distance %.2f is not well below the mean distance %.2f", nearest, all)
		}
	})
}
