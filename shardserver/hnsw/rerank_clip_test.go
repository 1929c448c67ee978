package hnsw

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRerankPrunedKeepsAClippedVector: a vector clipped by the codes (stored after the
// last retrain, outside the learned range) can be the nearest by far in float32 while
// many nodes come before it by Int8 distance. Its floor is low (it is far from its
// decoded vector), so a pruned re-ranking must still measure it: stopping at the first
// candidate whose floor rules it out would skip it, and answer without the nearest.
func TestRerankPrunedKeepsAClippedVector(t *testing.T) {
	const dim = 8
	n := retrainLast + 800
	x, err := New(int8Config(dim, L2, true))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	rng := rand.New(rand.NewPCG(11, 12))
	for key := range n {
		v := make([]float32, dim)
		for d := range v {
			v[d] = rng.Float32()
		}
		if key%3 == 0 {
			v[0] = 1 // many vectors on the face x0 = 1, the one nearest the query
		}
		if err := x.Add(uint64(key), v); err != nil {
			t.Fatal(err)
		}
	}
	// The query lies 2 beyond the face; the clipped vector 0.42 from it, decoded onto
	// the face 2.04 from it, behind every face vector within 0.42 of the query's foot.
	q := []float32{3, .5, .5, .5, .5, .5, .5, .5}
	clipped := []float32{3, .8, .8, .5, .5, .5, .5, .5}
	key := uint64(n)
	if err := x.Add(key, clipped); err != nil {
		t.Fatal(err)
	}
	s := x.getSearcher()
	defer x.putSearcher(s)
	s.refresh(x)
	x.prepare(&s.pq, x.qp.Load(), q)
	var all []pair
	rank := -1
	for id := range x.nslots.Load() {
		all = append(all, pair{x.qdist(s, &s.pq, id), id})
	}
	sortPairs(all)
	for i, p := range all {
		if p.id == x.keys[key] {
			rank = i
		}
	}
	if rank < 20 {
		t.Fatalf("the clipped vector is candidate %d by Int8 distance: the case needs it behind many", rank)
	}
	const k = 10
	ef := rank + 1
	s.out = append(s.out[:0], all[:ef]...)
	if err := x.rerankExact(s, q, k); err != nil {
		t.Fatal(err)
	}
	if len(s.out) == 0 || s.out[0].id != x.keys[key] {
		t.Fatalf("pruned re-ranking of %d candidates: first %v, want the clipped vector (node %d)", ef, s.out[:min(len(s.out), 3)], x.keys[key])
	}
	got := slices.Clone(s.out[:k])
	s.out = append(s.out[:0], all[:ef]...)
	if err := x.rerankExact(s, q, 0); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, s.out[:k]) {
		t.Fatalf("pruned %v, all %v", got, s.out[:k])
	}
	// And through Search, with an ef that reaches it.
	res, err := x.Search(q, k, SearchOptions{Ef: ef + 50})
	if err != nil || len(res) == 0 || res[0].Key != key {
		t.Fatalf("Search = %v, %v; want key %d first", res[:min(len(res), 3)], err, key)
	}
}
