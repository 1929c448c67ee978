package hnsw

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestConfigAndErrors(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("New(Config{}) err = %v, want ErrConfig", err)
	}
	for _, cfg := range []Config{{Dim: -1}, {Dim: 4, M: 1}, {Dim: 4, Metric: 9}, {Dim: 4, EfSearch: -1}, {Dim: MaxDim + 1}} {
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) err = %v, want ErrConfig", cfg, err)
		}
	}
	x, err := New(Config{Dim: 3, Metric: Cosine})
	if err != nil {
		t.Fatal(err)
	}
	if got := x.Config(); got.M != 16 || got.EfConstruction != 200 || got.EfSearch != 64 || got.Seed != 1 {
		t.Fatalf("defaults not applied: %+v", got)
	}
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	for _, tc := range []struct {
		name string
		vec  []float32
		want error
	}{
		{"nil", nil, ErrDimension},
		{"empty", []float32{}, ErrDimension},
		{"short", []float32{1, 2}, ErrDimension},
		{"long", []float32{1, 2, 3, 4}, ErrDimension},
		{"NaN", []float32{1, nan, 3}, ErrInvalidVector},
		{"Inf", []float32{1, 2, inf}, ErrInvalidVector},
		{"zero under Cosine", []float32{0, 0, 0}, ErrInvalidVector},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := x.Add(1, tc.vec); !errors.Is(err, tc.want) {
				t.Errorf("Add err = %v, want %v", err, tc.want)
			}
			if _, err := x.Search(tc.vec, 1, SearchOptions{}); !errors.Is(err, tc.want) {
				t.Errorf("Search err = %v, want %v", err, tc.want)
			}
		})
	}
	if x.Len() != 0 {
		t.Fatalf("Len = %d after only bad Adds", x.Len())
	}
	for _, k := range []int{0, -1} {
		if _, err := x.Search([]float32{1, 0, 0}, k, SearchOptions{}); !errors.Is(err, ErrInvalidK) {
			t.Errorf("k=%d: err = %v, want ErrInvalidK", k, err)
		}
	}
	if err := x.Delete(42); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete(absent) err = %v, want ErrNotFound", err)
	}
	if res, err := x.Search([]float32{1, 0, 0}, 5, SearchOptions{}); err != nil || len(res) != 0 {
		t.Errorf("search of empty index = %v, %v", res, err)
	}
}

// TestCheckVectorWide: the finite check finds a bad element anywhere in a vector wider
// than a SIMD register, and does not take a sum of squares that overflows for one.
func TestCheckVectorWide(t *testing.T) {
	x, err := New(Config{Dim: 40})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		for _, at := range []int{0, 17, 37, 39} {
			v := make([]float32, 40)
			v[at] = bad
			if _, err := x.checkVector(v, nil); !errors.Is(err, ErrInvalidVector) {
				t.Errorf("%v at %d: err = %v, want ErrInvalidVector", bad, at, err)
			}
		}
	}
	huge := make([]float32, 40)
	for i := range huge {
		huge[i] = 1e30 // finite, its square is not
	}
	if _, err := x.checkVector(huge, nil); err != nil {
		t.Errorf("finite elements whose squares overflow: err = %v", err)
	}
}

func TestParseMetric(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Metric
		ok   bool
	}{
		{"L2", L2, true}, {"l2", L2, true}, {"innerproduct", InnerProduct, true},
		{"COSINE", Cosine, true}, {"dot", 0, false}, {"", 0, false},
	} {
		got, err := ParseMetric(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseMetric(%q) = %v, %v", tc.in, got, err)
		}
		if tc.ok && got.String() != metricNames[tc.want] {
			t.Errorf("String() = %q", got.String())
		}
	}
}

func TestCosineNormalises(t *testing.T) {
	x, _ := New(Config{Dim: 2, Metric: Cosine})
	if err := x.Add(7, []float32{3, 4}); err != nil {
		t.Fatal(err)
	}
	v, ok := get(t, x, 7)
	if !ok || math.Abs(float64(v[0])-0.6) > 1e-6 || math.Abs(float64(v[1])-0.8) > 1e-6 {
		t.Fatalf("Get = %v, %v; want [0.6 0.8]", v, ok)
	}
	res, err := x.Search([]float32{30, 40}, 1, SearchOptions{})
	if err != nil || len(res) != 1 || res[0].Key != 7 || math.Abs(float64(res[0].Distance)) > 1e-6 {
		t.Fatalf("Search = %v, %v", res, err)
	}
}

// TestCosineTinyVectors: a vector whose norm is below 1/MaxFloat32 is still a direction;
// normalising it in float32 (multiplying by a reciprocal that overflows) stored +Inf
// and NaN components, and every distance to it was NaN.
func TestCosineTinyVectors(t *testing.T) {
	x, _ := New(Config{Dim: 3, Metric: Cosine})
	if err := x.Add(1, []float32{1e-40, 1e-40, 0}); err != nil {
		t.Fatal(err)
	}
	if err := x.Add(2, []float32{0, 1e-45, 0}); err != nil {
		t.Fatal(err)
	}
	want := map[uint64][]float32{1: {0.70710677, 0.70710677, 0}, 2: {0, 1, 0}}
	for key, w := range want {
		v, _ := get(t, x, key)
		for i := range v {
			if math.Abs(float64(v[i]-w[i])) > 1e-6 {
				t.Fatalf("key %d stored as %v, want %v", key, v, w)
			}
		}
	}
	res, err := x.Search([]float32{1e-42, 1e-42, 0}, 2, SearchOptions{})
	if err != nil || len(res) != 2 || res[0].Key != 1 || math.Abs(float64(res[0].Distance)) > 1e-6 {
		t.Fatalf("Search = %v, %v", res, err)
	}
}

// TestDeleteUpsert checks the key-level semantics against a model map.
func TestDeleteUpsert(t *testing.T) {
	data := clustered(9, 500, 8, 4)
	x := build(t, Config{Dim: 8, M: 8}, data)
	model := map[uint64][]float32{}
	for i, v := range data {
		model[uint64(i)] = v
	}
	rng := rand.New(rand.NewPCG(10, 11))
	for step := range 3000 {
		key := uint64(rng.IntN(700))
		switch rng.IntN(3) {
		case 0:
			err := x.Delete(key)
			if _, ok := model[key]; ok != (err == nil) {
				t.Fatalf("step %d: Delete(%d) = %v, in model %v", step, key, err, ok)
			}
			delete(model, key)
		default:
			v := data[rng.IntN(len(data))]
			if err := x.Add(key, v); err != nil {
				t.Fatal(err)
			}
			model[key] = v
		}
	}
	if x.Len() != len(model) {
		t.Fatalf("Len = %d, want %d", x.Len(), len(model))
	}
	checkInvariants(t, x, false)
	var keys []uint64
	x.Keys(func(k uint64) bool { keys = append(keys, k); return true })
	if len(keys) != len(model) {
		t.Fatalf("Keys gave %d, want %d", len(keys), len(model))
	}
	for k, v := range model {
		got, ok := get(t, x, k)
		if !ok || !slices.Equal(got, v) || !x.Contains(k) {
			t.Fatalf("Get(%d) = %v, %v; want %v", k, got, ok, v)
		}
	}
	if _, ok := get(t, x, 100000); ok || x.Contains(100000) {
		t.Fatal("absent key found")
	}
	// Every stored vector finds itself, and no search returns a deleted key or a
	// key twice.
	for k, v := range model {
		res, err := x.Search(v, 10, SearchOptions{Ef: 100})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[uint64]bool{}
		for _, r := range res {
			if _, ok := model[r.Key]; !ok || seen[r.Key] {
				t.Fatalf("search returned deleted or duplicate key %d", r.Key)
			}
			seen[r.Key] = true
		}
		if res[0].Distance != 0 {
			t.Fatalf("key %d: nearest is at %g, want an exact match", k, res[0].Distance)
		}
	}
	// Results are sorted and complete when enough vectors are live.
	res, _ := x.Search(data[0], len(model), SearchOptions{})
	if len(res) != len(model) || !slices.IsSortedFunc(res, func(a, b Result) int { return cmpF(a.Distance, b.Distance) }) {
		t.Fatalf("search for all %d: %d results, sorted %v", len(model), len(res), slices.IsSortedFunc(res, func(a, b Result) int { return cmpF(a.Distance, b.Distance) }))
	}
}

func cmpF(a, b float32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestFilter: a 1% filter still returns k results, all admitted, and they are the
// true nearest among the admitted.
func TestFilter(t *testing.T) {
	n := 10000
	if raceEnabled {
		n = 2000
	}
	data := clustered(12, n, 32, 20)
	queries := clustered(13, 50, 32, 20)
	x := build(t, Config{Dim: 32}, data)
	for _, tc := range []struct {
		name string
		keep func(uint64) bool
	}{
		{"1%", func(k uint64) bool { return k%100 == 7 }},
		{"10%", func(k uint64) bool { return k%10 == 3 }},
		{"50%", func(k uint64) bool { return k%2 == 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, q := range queries {
				res, err := x.Search(q, 10, SearchOptions{Filter: tc.keep})
				if err != nil {
					t.Fatal(err)
				}
				if len(res) != 10 {
					t.Fatalf("%d results, want 10", len(res))
				}
				for _, r := range res {
					if !tc.keep(r.Key) {
						t.Fatalf("key %d does not pass the filter", r.Key)
					}
				}
			}
			if r := recallAt(t, x, data, queries, tc.keep, 10, 64); r < 0.95 {
				t.Fatalf("filtered recall@10 = %.3f, want >= 0.95", r)
			}
		})
	}
}

// TestChurnRecall: after many rounds of deleting and inserting a fifth of the
// index, recall stays within 0.02 of a fresh build of the same final set, and
// deleted slots are reused instead of growing the index.
func TestChurnRecall(t *testing.T) {
	n, rounds := 5000, 10
	if raceEnabled {
		n, rounds = 1000, 3
	}
	const dim = 32
	pool := clustered(14, 3*n, dim, 30)
	queries := clustered(15, 100, dim, 30)
	x := build(t, Config{Dim: dim}, pool[:n])
	liveSet := make([][]float32, len(pool)) // key -> vector while live
	copy(liveSet, pool[:n])
	rng := rand.New(rand.NewPCG(16, 17))
	next := n
	for range rounds {
		for range n / 5 {
			for {
				k := rng.IntN(len(pool))
				if liveSet[k] != nil {
					if err := x.Delete(uint64(k)); err != nil {
						t.Fatal(err)
					}
					liveSet[k] = nil
					break
				}
			}
		}
		for range n / 5 {
			k := next % len(pool)
			for liveSet[k] != nil {
				k = (k + 1) % len(pool)
			}
			next = k + 1
			if err := x.Add(uint64(k), pool[k]); err != nil {
				t.Fatal(err)
			}
			liveSet[k] = pool[k]
		}
	}
	if x.Len() != n {
		t.Fatalf("Len = %d, want %d", x.Len(), n)
	}
	checkInvariants(t, x, false)
	fresh, _ := New(Config{Dim: dim})
	for k, v := range liveSet {
		if v != nil {
			if err := fresh.Add(uint64(k), v); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, ef := range []int{16, 64} {
		churned := recallAt(t, x, liveSet, queries, nil, 10, ef)
		base := recallAt(t, fresh, liveSet, queries, nil, 10, ef)
		t.Logf("ef=%d: recall after churn %.4f, fresh build %.4f; slots %d for %d live", ef, churned, base, x.nslots.Load(), n)
		if churned < base-0.02 {
			t.Errorf("ef=%d: recall after churn %.4f, fresh %.4f", ef, churned, base)
		}
	}
	if slots := int(x.nslots.Load()); slots > n+n/2 {
		t.Errorf("%d slots for %d live vectors: deleted slots are not reused", slots, n)
	}
	x.Vacuum()
	checkInvariants(t, x, true)
}

// TestConcurrentMixed runs searches, inserts, upserts, deletes, vacuums and
// snapshots at once; run it under -race. Afterwards the index must be consistent
// with what the writers did.
func TestConcurrentMixed(t *testing.T) {
	n := 3000
	if raceEnabled {
		n = 600
	}
	const dim = 16
	data := clustered(18, n, dim, 10)
	x, _ := New(Config{Dim: dim, M: 8, EfConstruction: 64})
	for i := range n / 2 {
		if err := x.Add(uint64(i), data[i]); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	const writers = 3
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			// Each writer owns the keys with k % writers == w, so it knows their state.
			for i := n / 2; i < n; i++ {
				if i%writers != w {
					continue
				}
				if err := x.Add(uint64(i), data[i]); err != nil {
					errc <- err
					return
				}
				k := uint64(rng.IntN(i/writers+1)*writers + w)
				if rng.IntN(2) == 0 {
					if err := x.Add(k, data[rng.IntN(n)]); err != nil { // upsert (or re-add)
						errc <- err
						return
					}
				} else if err := x.Delete(k); err != nil && !errors.Is(err, ErrNotFound) {
					errc <- err
					return
				}
			}
		}()
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for r := range 3 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 7))
			var dst []Result
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				var filter func(uint64) bool
				if r == 2 {
					filter = func(k uint64) bool { return k%3 == 0 }
				}
				dst, err = x.SearchInto(dst, data[rng.IntN(n)], 5, SearchOptions{Filter: filter})
				if err != nil {
					errc <- err
					return
				}
				seen := map[uint64]bool{}
				for _, res := range dst {
					if seen[res.Key] {
						errc <- errors.New("duplicate key in results")
						return
					}
					seen[res.Key] = true
				}
				_, _, _ = x.Get(uint64(rng.IntN(n)))
			}
		}()
	}
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			x.Vacuum()
			// Images written beside the writers load as valid indexes.
			var buf bytes.Buffer
			if _, err := x.WriteTo(&buf); err != nil {
				errc <- err
				return
			}
			if _, err := Read(&buf); err != nil {
				errc <- err
				return
			}
			time.Sleep(2 * time.Millisecond) // let the writers make progress between passes
		}
	}()
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	checkInvariants(t, x, false)
	x.Vacuum()
	checkInvariants(t, x, true)
	count := 0
	x.Keys(func(k uint64) bool {
		count++
		v, ok := get(t, x, k)
		if !ok {
			t.Fatalf("key %d listed but not found", k)
		}
		res, err := x.Search(v, 1, SearchOptions{Ef: 200})
		if err != nil || len(res) == 0 || res[0].Distance != 0 {
			t.Fatalf("key %d does not find its own vector: %v %v", k, res, err)
		}
		return true
	})
	if count != x.Len() {
		t.Fatalf("Keys gave %d, Len %d", count, x.Len())
	}
}

// TestSearchAllocs: a search in steady state allocates nothing.
func TestSearchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	data := clustered(19, 2000, 32, 10)
	for _, m := range []Metric{L2, Cosine} {
		x := build(t, Config{Dim: 32, Metric: m}, data)
		dst := make([]Result, 0, 10)
		q := data[5]
		filter := func(k uint64) bool { return k%2 == 0 }
		allocs := testing.AllocsPerRun(200, func() {
			dst, _ = x.SearchInto(dst, q, 10, SearchOptions{})
			dst, _ = x.SearchInto(dst, q, 10, SearchOptions{Filter: filter})
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per search, want 0", m, allocs)
		}
	}
}

// TestUpsertChurn: replacing every vector many times reuses the slots of the
// replaced ones, and every key still finds its latest vector.
//
// The Vacuum that frees replaced slots runs in the background and may fall behind
// the writer on a loaded machine, so each round ends by letting it finish: then the
// next round's upserts find every replaced slot on the free list, and the index never
// needs more than 2n slots (6n without reuse).
func TestUpsertChurn(t *testing.T) {
	const n, dim = 1000, 16
	pool := clustered(40, 6*n, dim, 10)
	x := build(t, Config{Dim: dim, M: 8}, pool[:n])
	for round := 1; round < 6; round++ {
		for k := range n {
			if err := x.Add(uint64(k), pool[round*n+k]); err != nil {
				t.Fatal(err)
			}
		}
		for x.vacuuming.Load() {
			time.Sleep(time.Millisecond)
		}
		x.Vacuum()
		if d := x.deleted.Load(); d != 0 {
			t.Fatalf("round %d: %d tombstones left after Vacuum", round, d)
		}
	}
	if x.Len() != n {
		t.Fatalf("Len = %d, want %d", x.Len(), n)
	}
	if slots := int(x.nslots.Load()); slots > 2*n {
		t.Fatalf("%d slots for %d keys after upserts: replaced slots are not reused", slots, n)
	}
	checkInvariants(t, x, false)
	for k := range n {
		res, err := x.Search(pool[5*n+k], 1, SearchOptions{})
		if err != nil || len(res) != 1 || res[0].Distance != 0 || res[0].Key != uint64(k) {
			t.Fatalf("key %d: %v, %v", k, res, err)
		}
	}
}

// TestAddAmongTombstones: a vector added when every other node is a tombstone
// (too few for a Vacuum) is still found.
func TestAddAmongTombstones(t *testing.T) {
	data := clustered(41, 60, 8, 3)
	x := build(t, Config{Dim: 8, M: 4}, data[:50])
	for k := range 50 {
		if err := x.Delete(uint64(k)); err != nil {
			t.Fatal(err)
		}
	}
	for k := 50; k < 60; k++ {
		if err := x.Add(uint64(k), data[k]); err != nil {
			t.Fatal(err)
		}
	}
	for k := 50; k < 60; k++ {
		res, err := x.Search(data[k], 10, SearchOptions{})
		if err != nil || len(res) != 10 || res[0].Key != uint64(k) {
			t.Fatalf("key %d: %v, %v", k, res, err)
		}
	}
	checkInvariants(t, x, false)
	x.Vacuum()
	checkInvariants(t, x, true)
	for k := 50; k < 60; k++ {
		if res, err := x.Search(data[k], 10, SearchOptions{}); err != nil || len(res) != 10 || res[0].Key != uint64(k) {
			t.Fatalf("after Vacuum, key %d: %v, %v", k, res, err)
		}
	}
}
