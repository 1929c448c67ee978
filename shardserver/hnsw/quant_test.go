package hnsw

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// TestDotU8I16Kernels proves the SIMD Int8 kernels equal the portable one, exactly,
// including at the bounds (codes 255, |u| = uMax, MaxDim) where an int32 overflow
// would show. The AVX-512 kernels are checked only on a CPU that has AVX-512BW
// (and VNNI), by CPUID as the dispatch selects them; the test says which kernels it
// compared. The VNNI kernel reads the query split into bytes, and as many codes as
// there are dimensions.
func TestDotU8I16Kernels(t *testing.T) {
	kernels := map[string]func([]byte, []int16) int64{}
	if useAVX2 {
		kernels["avx2"] = dotU8I16AVX2
	}
	if useAVX512BW {
		kernels["avx512bw"] = dotU8I16AVX512
	}
	if useVNNI {
		var q []int8
		kernels["vnni"] = func(c []byte, u []int16) int64 {
			q = splitQuery(u, q)
			return dotU8I8VNNI(c[:len(u)], q)
		}
	}
	if len(kernels) == 0 {
		t.Skip("no SIMD Int8 kernel on this CPU: only the portable one runs")
	}
	t.Logf("comparing %v with the portable kernel", slices.Sorted(func(yield func(string) bool) {
		for k := range kernels {
			if !yield(k) {
				return
			}
		}
	}))
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(c []byte, u []int16) {
		t.Helper()
		want := dotU8I16Scalar(c, u)
		var exact int64
		for i := range u {
			exact += int64(c[i]) * int64(u[i])
		}
		if want != exact {
			t.Fatalf("portable kernel: %d, want %d", want, exact)
		}
		for name, k := range kernels {
			if got := k(c, u); got != want {
				t.Fatalf("%s kernel, n=%d: %d, want %d", name, len(u), got, want)
			}
		}
	}
	for n := 32; n <= MaxDim; n += 32 {
		c := make([]byte, n+7) // longer than u: only len(u) elements count
		u := make([]int16, n)
		for i := range c {
			c[i] = byte(rng.IntN(256))
		}
		for i := range u {
			u[i] = int16(rng.IntN(2*uMax+1) - uMax)
		}
		check(c, u)
		for i := range u { // the extremes: every lane at its bound
			c[i], u[i] = 255, uMax
		}
		check(c, u)
		for i := range u {
			u[i] = -uMax
		}
		check(c, u)
		for i := range u { // the split's edges: h and l at their bounds, mixed signs
			u[i] = [...]int16{-uMax, uMax, -1, 0, 127, -128, 128, -129}[rng.IntN(8)]
			c[i] = [...]byte{0, 1, 254, 255}[rng.IntN(4)]
		}
		check(c, u)
	}
}

// TestPrepareKernels: the AVX-512 preparation of a query (the largest scaled value,
// then the rounding to int16) equals the portable loops exactly, at every length (the
// tail under a mask, nothing written past it), on both signs and on exact halves.
func TestPrepareKernels(t *testing.T) {
	if !useAVX512 {
		t.Skip("no AVX-512 on this CPU: only the portable preparation runs")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	lengths := []int{784, MaxDim}
	for n := 1; n <= 70; n++ {
		lengths = append(lengths, n)
	}
	for _, n := range lengths {
		v, sc := make([]float32, n), make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 100)
			sc[i] = float32(rng.Float64())
		}
		if got, want := scaleMaxAVX512(v, sc), scaleMaxScalar(v, sc); got != want {
			t.Fatalf("n=%d: scaleMax %v, want %v", n, got, want)
		}
		inv := uMax / scaleMaxScalar(v, sc)
		got, want := make([]int16, n+17), make([]int16, n+17)
		for i := n; i < len(got); i++ {
			got[i], want[i] = 7, 7 // past v: left alone
		}
		quantizeAVX512(v, sc, inv, got)
		quantizeScalar(v, sc, inv, want)
		if !slices.Equal(got, want) {
			t.Fatalf("n=%d: quantize %v, want %v", n, got, want)
		}
	}
	v := []float32{2.5, -2.5, 0.5, -0.5, 0, 8190.5, -8190.5, 1.4999999}
	one := []float32{1, 1, 1, 1, 1, 1, 1, 1}
	got := make([]int16, len(v))
	quantizeAVX512(v, one, 1, got)
	if want := []int16{3, -3, 1, -1, 0, 8191, -8191, 1}; !slices.Equal(got, want) {
		t.Fatalf("halves: %v, want %v", got, want)
	}
}

// TestSplitQuery checks the byte form of a prepared query: u = 128*h + l for every
// value the preparation can produce, with the padding zero; at a length the AVX-512
// loop takes (a multiple of 32) and at one only the portable loop does.
func TestSplitQuery(t *testing.T) {
	for _, extra := range []int{1, 0} { // 2*uMax+2 values: a multiple of 32
		u := make([]int16, 0, 2*uMax+2)
		for v := -uMax; v <= uMax; v++ {
			u = append(u, int16(v))
		}
		u = append(u, make([]int16, extra)...)
		b := splitQuery(u, []int8{1, 2, 3})
		n := len(b) / 2
		if n%64 != 0 || n < len(u) {
			t.Fatalf("split of %d values: halves of %d bytes", len(u), n)
		}
		for i, v := range u {
			h, l := b[i], b[n+i]
			if h < -64 || h > 63 || l < 0 || 128*int(h)+int(l) != int(v) {
				t.Fatalf("%d values, u=%d: h=%d l=%d", len(u), v, h, l)
			}
		}
		for i := len(u); i < n; i++ {
			if b[i] != 0 || b[n+i] != 0 {
				t.Fatalf("%d values, padding byte %d: h=%d l=%d, want 0", len(u), i, b[i], b[n+i])
			}
		}
	}
}

func TestParseQuantization(t *testing.T) {
	for in, want := range map[string]Quantization{"": NoQuantization, "none": NoQuantization, "INT8": Int8, "Int8": Int8} {
		if got, err := ParseQuantization(in); err != nil || got != want {
			t.Errorf("ParseQuantization(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseQuantization("int4"); err == nil {
		t.Error("ParseQuantization(int4): no error")
	}
	if _, err := New(Config{Dim: 4, Quantization: 7}); !errors.Is(err, ErrConfig) {
		t.Errorf("New with quantization 7: %v, want ErrConfig", err)
	}
}

func int8Config(dim int, m Metric, rerank bool) Config {
	return Config{Dim: dim, Metric: m, Quantization: Int8, Rerank: rerank}
}

// TestInt8Recall: the walk on codes finds the true neighbours (recall floors with and
// without re-ranking), and re-ranked distances are the exact float32 ones.
func TestInt8Recall(t *testing.T) {
	for _, m := range []Metric{L2, InnerProduct, Cosine} {
		t.Run(m.String(), func(t *testing.T) {
			n, nq := 5000, 100
			if raceEnabled {
				n, nq = 400, 20
			}
			data := clustered(3, n, 48, 20)
			queries := clustered(4, nq, 48, 20)
			x := build(t, int8Config(48, m, false), data)
			defer x.Close()
			plain := recallAt(t, x, data, queries, nil, 10, 64)
			x.SetRerank(true)
			exact := recallAt(t, x, data, queries, nil, 10, 64)
			t.Logf("%s recall@10: %.4f on codes, %.4f re-ranked", m, plain, exact)
			if plain < 0.85 || exact < 0.95 {
				t.Fatalf("%s recall@10 %.4f on codes (want >= 0.85), %.4f re-ranked (want >= 0.95)", m, plain, exact)
			}
			dist := DistanceFunc(m)
			for _, q := range queries[:10] {
				res, err := x.Search(q, 10, SearchOptions{})
				if err != nil {
					t.Fatal(err)
				}
				pq, _ := x.Prepare(q)
				for i, r := range res {
					v, _ := x.Prepare(data[r.Key])
					if want := dist(pq, v); r.Distance != want {
						t.Fatalf("result %d: distance %v, want the exact %v", i, r.Distance, want)
					}
					if i > 0 && res[i-1].Distance > r.Distance {
						t.Fatalf("results out of order: %v", res)
					}
				}
			}
		})
	}
}

// TestInt8GetExact: Get returns the float32 vector as stored, not a decoded one.
func TestInt8GetExact(t *testing.T) {
	for _, m := range []Metric{L2, Cosine} {
		data := clustered(5, 300, 40, 4)
		x := build(t, int8Config(40, m, true), data)
		for i, v := range data {
			want, _ := x.Prepare(v)
			got, ok := get(t, x, uint64(i))
			if !ok || !slices.Equal(got, want) {
				t.Fatalf("%s: Get(%d) = %v, %v; want %v", m, i, got, ok, want)
			}
		}
		x.Close()
	}
}

// TestInt8GetError: a vector file that fails makes Get return the error at once, from
// the failed read on, while an absent key is still just absent.
func TestInt8GetError(t *testing.T) {
	data := clustered(11, 100, 8, 4)
	x := build(t, int8Config(8, L2, true), data)
	defer x.Close()
	if _, ok, err := x.Get(3); !ok || err != nil {
		t.Fatalf("Get before the failure: %v, %v", ok, err)
	}
	if err := x.vf.close(); err != nil { // unmapped and closed: the next read fails
		t.Fatal(err)
	}
	for i := range 2 {
		if v, ok, err := x.Get(3); err == nil || ok || v != nil {
			t.Fatalf("Get %d after the file failed: %v, %v, %v; want an error", i, v, ok, err)
		}
	}
	if _, ok, err := x.Get(1000); ok || err != nil {
		t.Fatalf("Get of an absent key: %v, %v; want not found", ok, err)
	}
	if _, err := x.Search(data[0], 1, SearchOptions{}); err == nil {
		t.Fatal("Search after the file failed: no error")
	}
}

// TestInt8MemoryRatio: a node costs about a third of its float32 form at d=784.
func TestInt8MemoryRatio(t *testing.T) {
	f, _ := New(Config{Dim: 784, Capacity: 4096})
	q, err := New(Config{Dim: 784, Capacity: 4096, Quantization: Int8})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	r := float64(q.MemoryBytes()) / float64(f.MemoryBytes())
	t.Logf("Int8/float32 memory at d=784: %.3f", r)
	if r > 0.35 {
		t.Fatalf("Int8 memory is %.3f of float32, want <= 0.35", r)
	}
}

// TestInt8DeleteVacuum: deletes and a Vacuum on codes keep the graph sound and
// deleted keys out of results.
func TestInt8DeleteVacuum(t *testing.T) {
	n, nq := 3000, 50
	if raceEnabled {
		n, nq = 500, 15
	}
	data := clustered(6, n, 32, 10)
	queries := clustered(7, nq, 32, 10)
	x := build(t, int8Config(32, L2, true), data)
	defer x.Close()
	for i := 0; i < n; i += 2 {
		if err := x.Delete(uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	x.Vacuum()
	checkInvariants(t, x, true)
	keep := func(k uint64) bool { return k%2 == 1 }
	for i := range data {
		if !keep(uint64(i)) {
			data[i] = nil
		}
	}
	r := recallAt(t, x, data, queries, nil, 10, 64)
	t.Logf("recall@10 after deleting half: %.4f", r)
	if r < 0.95 {
		t.Fatalf("recall@10 after deletes %.4f, want >= 0.95", r)
	}
	for _, q := range queries {
		res, _ := x.Search(q, 10, SearchOptions{})
		for _, r := range res {
			if !keep(r.Key) {
				t.Fatalf("deleted key %d returned", r.Key)
			}
		}
	}
}

func searchAll(t *testing.T, x *Index, queries [][]float32) [][]Result {
	t.Helper()
	var out [][]Result
	for _, q := range queries {
		res, err := x.Search(q, 10, SearchOptions{Ef: 40})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, res)
	}
	return out
}

// TestInt8SnapshotRoundTrip: an Int8 image loads with the same codes and gives the
// same results; files convert between quantizations; version 1 files still load.
func TestInt8SnapshotRoundTrip(t *testing.T) {
	// A retrain point (2048, or 512 under -race) as the size, so the parameters fit all
	// of the data and the image writes them unchanged.
	n := 2048
	if raceEnabled {
		n = 512
	}
	data := clustered(8, n, 32, 8)
	queries := clustered(9, 30, 32, 8)
	x := build(t, int8Config(32, Cosine, false), data)
	defer x.Close()
	for i := 0; i < 100; i++ {
		if err := x.Delete(uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	want := searchAll(t, x, queries)
	img := x.Freeze(nil)
	if img.qp != x.qp.Load() {
		t.Fatal("the image relearned parameters that fit the data")
	}
	img.Release()
	b := encode(t, x)
	y, err := Read(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer y.Close()
	if y.Config().Quantization != Int8 {
		t.Fatalf("read back as %v", y.Config().Quantization)
	}
	if got := searchAll(t, y, queries); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatal("an Int8 index read back answers differently")
	}
	checkInvariants(t, y, false)

	// Int8 -> None keeps the graph and the exact vectors.
	f, err := ReadWith(bytes.NewReader(b), ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []uint64{100, uint64(n - 1)} {
		v1, _ := get(t, x, k)
		v2, _ := get(t, f, k)
		if !slices.Equal(v1, v2) {
			t.Fatalf("key %d: float32 vector changed through an Int8 file", k)
		}
	}
	// None -> Int8, from a version 1 file (version 2 without the quantization field).
	v1 := toVersion1(t, encode(t, f))
	z, err := ReadWith(bytes.NewReader(v1), ReadOptions{Quantization: Int8, Rerank: true, VectorDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	live := slices.Clone(data)
	for i := range 100 {
		live[i] = nil
	}
	if r := recallAt(t, z, live, queries, nil, 10, 64); r < 0.95 {
		t.Fatalf("recall@10 of a version 1 float32 file loaded as Int8: %.4f", r)
	}
}

// toVersion1 rewrites a version 2 file of an unquantized index as version 1.
func toVersion1(t *testing.T, b []byte) []byte {
	t.Helper()
	const quantAt = 8 + 4 + 5*4 + 8
	if binary.LittleEndian.Uint32(b[8:]) != 2 || binary.LittleEndian.Uint32(b[quantAt:]) != 0 {
		t.Fatal("not a version 2 file of an unquantized index")
	}
	v1 := slices.Concat(b[:quantAt], b[quantAt+4:len(b)-4])
	binary.LittleEndian.PutUint32(v1[8:], 1)
	return binary.LittleEndian.AppendUint32(v1, crc32.Checksum(v1, castagnoli))
}

// TestInt8Retrain: the parameters follow the data while the index is young, and a
// snapshot relearns them when later data leaves the range.
func TestInt8Retrain(t *testing.T) {
	if raceEnabled {
		t.Skip("over 10k inserts: run without -race (TestInt8Concurrent covers retraining under -race)")
	}
	const dim = 16
	rng := rand.New(rand.NewPCG(3, 4))
	vec := func(scale float32) []float32 {
		v := make([]float32, dim)
		for i := range v {
			v[i] = scale * float32(rng.Float64())
		}
		return v
	}
	x, err := New(int8Config(dim, L2, true))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	var data [][]float32
	add := func(scale float32, n int) {
		for range n {
			v := vec(scale)
			if err := x.Add(uint64(len(data)), v); err != nil {
				t.Fatal(err)
			}
			data = append(data, v)
		}
	}
	add(1, 100)
	if p := x.qp.Load(); p.scale[0] == 0 || p.scale[0] > 1.0/255*1.01 {
		t.Fatalf("after 100 vectors in [0,1): scale %v", p.scale[0])
	}
	add(10, 2000) // crosses 128, 512 and 2048: relearned for [0,10)
	if p := x.qp.Load(); p.scale[0] < 9.0/255 {
		t.Fatalf("after vectors in [0,10): scale %v, not relearned", p.scale[0])
	}
	add(10, retrainLast) // past the last retrain point
	before := x.qp.Load()
	add(12, 500) // drift no retrain follows
	if x.qp.Load() != before {
		t.Fatal("parameters changed past the last retrain point")
	}
	img := x.Freeze(nil)
	relearned := img.qp
	img.Release()
	if relearned == before || relearned.scale[0] < 11.5/255 {
		t.Fatalf("a snapshot after drift carries scale %v, not relearned", relearned.scale[0])
	}
	y, err := Read(bytes.NewReader(encode(t, x)))
	if err != nil {
		t.Fatal(err)
	}
	defer y.Close()
	if p := y.qp.Load(); !slices.Equal(p.scale, relearned.scale) || !slices.Equal(p.off, relearned.off) {
		t.Fatal("the index read back does not use the relearned parameters")
	}
	var queries [][]float32
	for i := range 30 {
		queries = append(queries, vec([]float32{10, 12}[i%2]))
	}
	if r := recallAt(t, y, data, queries, nil, 10, 64); r < 0.95 {
		t.Fatalf("recall@10 after the relearned snapshot: %.4f", r)
	}
}

// TestInt8Concurrent runs Adds (through the retrain points), Deletes and searches
// together; under -race it checks that retraining and walks never overlap.
func TestInt8Concurrent(t *testing.T) {
	n := 3000
	if raceEnabled {
		n = 700 // crosses the retrain points 32, 128 and 512
	}
	data := clustered(10, n, 32, 6)
	x, err := New(int8Config(32, InnerProduct, true))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 2 {
		wg.Go(func() {
			for i := w; i < n; i += 2 {
				if err := x.Add(uint64(i), data[i]); err != nil {
					t.Error(err)
					return
				}
				if i%7 == 0 {
					if err := x.Delete(uint64(i)); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	var searchers sync.WaitGroup
	for range 2 {
		searchers.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				res, err := x.Search(data[i%n], 5, SearchOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				for _, r := range res {
					if r.Key >= uint64(n) || math.IsNaN(float64(r.Distance)) || math.IsInf(float64(r.Distance), 0) {
						t.Errorf("bad result %v", r)
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	searchers.Wait()
	checkInvariants(t, x, false)
	if want := n - (n+6)/7; x.Len() != want {
		t.Fatalf("Len %d, want %d", x.Len(), want)
	}
	for i := 0; i < n; i += 7 {
		data[i] = nil
	}
	var queries [][]float32
	for i := 1; i < n; i += 97 {
		if data[i] != nil {
			queries = append(queries, data[i])
		}
	}
	if r := recallAt(t, x, data, queries, nil, 10, 64); r < 0.95 {
		t.Fatalf("recall@10 after the concurrent build: %.4f", r)
	}
}

// BenchmarkDotU8I16 compares the Int8 kernels at d=784 (codes padded to 800).
func BenchmarkDotU8I16(b *testing.B) {
	c := make([]byte, 800)
	u := make([]int16, 800)
	for i := range c {
		c[i], u[i] = byte(i), int16(i-400)
	}
	q := splitQuery(u, nil)
	kernels := []struct {
		name string
		f    func([]byte, []int16) int64
		ok   bool
	}{{"scalar", dotU8I16Scalar, true}, {"avx2", dotU8I16AVX2, useAVX2}, {"avx512bw", dotU8I16AVX512, useAVX512BW},
		{"vnni", func(c []byte, u []int16) int64 { return dotU8I8VNNI(c, q) }, useVNNI}}
	for _, k := range kernels {
		if !k.ok {
			continue
		}
		b.Run(k.name, func(b *testing.B) {
			var s int64
			for b.Loop() {
				s += k.f(c, u)
			}
			_ = s
		})
	}
}

// TestRerankFloor: the lower bound the re-ranking stops on is below every node's exact
// distance (it may skip only nodes that cannot be among the k nearest), and it is not
// vacuous: for most nodes it is within 5 % of the spread of the distances.
func TestRerankFloor(t *testing.T) {
	for _, m := range []Metric{L2, InnerProduct, Cosine} {
		t.Run(m.String(), func(t *testing.T) {
			n, nq := 2000, 20
			if raceEnabled {
				n, nq = 300, 5
			}
			data := clusteredLatent(5, n, 96, 10, 16, 0.3)
			x := build(t, int8Config(96, m, true), data)
			defer x.Close()
			s := x.getSearcher()
			defer x.putSearcher(s)
			close, total := 0, 0
			for _, q := range clusteredLatent(6, nq, 96, 10, 16, 0.3) {
				pq, err := x.Prepare(q)
				if err != nil {
					t.Fatal(err)
				}
				x.prepare(&s.pq, x.qp.Load(), pq)
				f := x.floorOf(s)
				lo, hi := float32(math.Inf(1)), float32(math.Inf(-1))
				var gaps []float32
				for id := range x.nslots.Load() {
					exact, err := x.exactDist(s, pq, id)
					if err != nil {
						t.Fatal(err)
					}
					d := x.qdist(s, &s.pq, id)
					b := f.below(d, x.devOf(s, id))
					if b > exact {
						t.Fatalf("node %d: floor %v above the exact distance %v (Int8 %v)", id, b, exact, d)
					}
					lo, hi = min(lo, exact), max(hi, exact)
					gaps = append(gaps, exact-b)
				}
				for _, g := range gaps {
					if g < 0.05*(hi-lo) {
						close++
					}
					total++
				}
			}
			if close < total/2 {
				t.Fatalf("the floor is within 5 %% of the spread for only %d of %d nodes", close, total)
			}
		})
	}
}

// TestRerankPruned: a re-ranking that skips candidates by their floor gives the k
// first that one of every candidate gives, keys and distances, for several k and
// candidate counts.
// The candidates are the nodes nearest by Int8 distance, as a walk collects them.
func TestRerankPruned(t *testing.T) {
	n, nq := 5000, 100
	if raceEnabled {
		n, nq = 400, 5
	}
	// In the second set the nodes' devs vary enough that a floor's order is not the
	// Int8 distances' order: a re-ranking that stopped at the first candidate ruled out
	// would miss one behind it.
	sets := [][2][][]float32{
		{clusteredLatent(7, n, 64, 20, 12, 0.3), clusteredLatent(8, nq, 64, 20, 12, 0.3)},
		{clustered(3, n, 48, 20), clustered(4, nq, 48, 20)},
	}
	for _, m := range []Metric{L2, InnerProduct, Cosine} {
		for _, set := range sets {
			data, queries := set[0], set[1]
			x := build(t, int8Config(len(data[0]), m, true), data)
			s := x.getSearcher()
			pruned := 0
			for _, q := range queries {
				pq, err := x.Prepare(q)
				if err != nil {
					t.Fatal(err)
				}
				x.prepare(&s.pq, x.qp.Load(), pq)
				var all []pair
				for id := range x.nslots.Load() {
					all = append(all, pair{x.qdist(s, &s.pq, id), id})
				}
				sortPairs(all)
				for _, k := range []int{1, 5, 10} {
					for _, ef := range []int{10, 16, 64} {
						s.out = append(s.out[:0], all[:ef]...)
						if err := x.rerankExact(s, pq, 0); err != nil {
							t.Fatal(err)
						}
						want := slices.Clone(s.out[:k])
						s.out = append(s.out[:0], all[:ef]...)
						if err := x.rerankExact(s, pq, k); err != nil {
							t.Fatal(err)
						}
						if len(s.out) < k || !slices.Equal(s.out[:k], want) {
							t.Fatalf("%v k=%d ef=%d: pruned %v, all %v", m, k, ef, s.out, want)
						}
						pruned += ef - len(s.out)
					}
				}
			}
			x.putSearcher(s)
			x.Close()
			if pruned == 0 {
				t.Fatalf("%v: the floor never stopped a re-ranking", m)
			}
		}
	}
}

// TestInt8Dev: the distance of a stored vector to its decoded one, kept beside its
// codes for the floor of the re-ranking, is that distance (rounded up), half a step per
// dimension at most in range, more for a clipped vector, and a retrain updates it.
func TestInt8Dev(t *testing.T) {
	const dim = 4
	x, err := New(int8Config(dim, L2, true))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	rng := rand.New(rand.NewPCG(9, 10))
	var data [][]float32
	add := func(n int, scale float32) {
		for range n {
			v := make([]float32, dim)
			for i := range v {
				v[i] = scale * float32(rng.Float64())
			}
			if err := x.Add(uint64(len(data)), v); err != nil {
				t.Fatal(err)
			}
			data = append(data, v)
		}
	}
	s := x.getSearcher()
	defer x.putSearcher(s)
	// check: every node's dev against its vector and decoded vector; returns the most.
	check := func(what string) float64 {
		t.Helper()
		s.refresh(x)
		p := x.qp.Load()
		var most float64
		for key, v := range data {
			id := x.keys[uint64(key)]
			var d2 float64
			for d, c := range x.codesOf(s, id)[:dim] {
				e := float64(v[d]) - float64(p.off[d]+p.scale[d]*float32(c))
				d2 += e * e
			}
			want := math.Sqrt(d2)
			if got := float64(x.devOf(s, id)); got < want || got > want*(1+1e-5)+1e-30 {
				t.Fatalf("%s: key %d: dev %v, want %v", what, key, got, want)
			}
			most = max(most, want)
		}
		return most
	}
	add(retrainFirst, 1) // the first retrain: every vector in range
	halfStep := math.Sqrt(dim) * 0.5 * float64(slices.Max(x.qp.Load().scale))
	if most := check("after the first retrain"); most > halfStep*(1+1e-5) {
		t.Fatalf("in range, a dev of %v, beyond half a step in every dimension (%v)", most, halfStep)
	}
	add(1, 5)
	if most := check("after a clipped vector"); most < 1 {
		t.Fatalf("dev %v for a vector clipped by more than 1 in some dimension", most)
	}
	add(128-retrainFirst-1, 1) // the next retrain learns the wider range
	check("after the second retrain")
}

func TestInsertSmallest(t *testing.T) {
	var ds []float32
	for _, d := range []float32{5, 3, 9, 1, 4, 4, 0, 8} {
		ds = insertSmallest(ds, d, 4)
	}
	if want := []float32{0, 1, 3, 4}; !slices.Equal(ds, want) {
		t.Fatalf("got %v, want %v", ds, want)
	}
}
