package hnsw

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// subsetOf returns a Subset of the keys for which in is true, over n keys.
func subsetOf(n int, in func(uint64) bool, plan Plan) Subset {
	var keys []uint64
	for k := range uint64(n) {
		if in(k) {
			keys = append(keys, k)
		}
	}
	return Subset{Len: len(keys), Contains: in, Plan: plan, Keys: func(yield func(uint64) bool) {
		for _, k := range keys {
			if !yield(k) {
				return
			}
		}
	}}
}

// TestSearchSubset: at every share of the index, from a handful of keys to half of
// them, the planned search finds the subset's true neighbours; the scan is exact; no
// key outside the subset is returned.
func TestSearchSubset(t *testing.T) {
	n, nq := 8000, 40
	if raceEnabled {
		n, nq = 1000, 8
	}
	for _, q := range []Quantization{NoQuantization, Int8} {
		data := clustered(31, n, 32, 20)
		queries := clustered(32, nq, 32, 20)
		x := build(t, Config{Dim: 32, Metric: Cosine, Quantization: q, Rerank: true}, data)
		// Warm the planner's measure of a walk's cost.
		for _, qv := range queries {
			if _, err := x.Search(qv, 10, SearchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		rng := rand.New(rand.NewPCG(5, 6))
		member := make([]float64, n)
		for i := range member {
			member[i] = rng.Float64()
		}
		for _, share := range []float64{0.001, 0.01, 0.1, 0.5} {
			in := func(k uint64) bool { return member[k] < share }
			for _, plan := range []Plan{PlanAuto, PlanScan, PlanWalk} {
				t.Run(fmt.Sprintf("%v/share=%v/%v", q, share, plan), func(t *testing.T) {
					sub := subsetOf(n, in, plan)
					var hit, total, scans int
					for _, qv := range queries {
						got, used, err := x.SearchSubset(nil, qv, 10, SearchOptions{Ef: 40}, sub)
						if err != nil {
							t.Fatal(err)
						}
						if plan != PlanAuto && used != plan {
							t.Fatalf("forced %v, used %v", plan, used)
						}
						if used == PlanScan {
							scans++
						}
						want := bruteForce(Cosine, data, in, qv, 10)
						if len(got) != len(want) {
							t.Fatalf("%d results, %d in the subset's top 10", len(got), len(want))
						}
						for i, r := range got {
							if !in(r.Key) {
								t.Fatalf("key %d is not in the subset", r.Key)
							}
							if slices.Contains(want, r.Key) {
								hit++
							}
							if used == PlanScan && r.Key != want[i] && refDist(Cosine, qv, data[r.Key]) != refDist(Cosine, qv, data[want[i]]) {
								t.Fatalf("scan result %d: key %d, want %d", i, r.Key, want[i])
							}
						}
						total += len(want)
					}
					recall := float64(hit) / float64(total)
					t.Logf("%d keys: recall@10 %.4f, %d of %d queries scanned", sub.Len, recall, scans, len(queries))
					if recall < 0.95 {
						t.Fatalf("recall@10 %.4f, want >= 0.95", recall)
					}
				})
			}
		}
		x.Close()
	}
}

// TestSearchSubsetPlans: the planner scans a tiny subset and walks one of nearly every
// key (with the walk's measured cost pinned, so the rule is what is under test), and a
// scan skips keys the index does not hold.
func TestSearchSubsetPlans(t *testing.T) {
	data := clustered(33, 3000, 16, 10)
	x := build(t, Config{Dim: 16, EfConstruction: 40}, data) // the graph's quality is not under test
	for _, v := range data[:20] {
		if _, err := x.Search(v, 10, SearchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if x.perEf.Load() == 0 {
		t.Fatal("20 searches measured no walk")
	}
	x.perEf.Store(math.Float32bits(10)) // a walk at ef scores 10*ef nodes
	q := data[7]
	for _, tc := range []struct {
		name string
		in   func(uint64) bool
		want Plan
	}{
		// 3 keys against 10*64/0.001 scores.
		{"3 of 3000", func(k uint64) bool { return k%1000 == 7 }, PlanScan},
		// 1500 keys against 10*128/0.5 = 2560 scores.
		{"half", func(k uint64) bool { return k%2 == 1 }, PlanScan},
		// 2997 keys against 10*65/0.999 = 651 scores.
		{"all but 3", func(k uint64) bool { return k%1000 != 7 }, PlanWalk},
	} {
		if _, plan, _ := x.SearchSubset(nil, q, 10, SearchOptions{Ef: 64}, subsetOf(3000, tc.in, PlanAuto)); plan != tc.want {
			t.Fatalf("%s: plan %v, want %v", tc.name, plan, tc.want)
		}
	}
	ghost := Subset{Len: 3, Keys: func(yield func(uint64) bool) {
		for _, k := range []uint64{7, 999999, 1007} {
			if !yield(k) {
				return
			}
		}
	}}
	got, plan, err := x.SearchSubset(nil, q, 10, SearchOptions{}, ghost)
	if err != nil || plan != PlanScan || len(got) != 2 || got[0].Key != 7 || got[0].Distance != 0 {
		t.Fatalf("scan with an unknown key: %v, %v, %v", got, plan, err)
	}
	if _, _, err := x.SearchSubset(nil, q, 0, SearchOptions{}, ghost); err == nil {
		t.Fatal("k=0: no error")
	}
}
