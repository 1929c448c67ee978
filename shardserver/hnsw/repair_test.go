package hnsw

import (
	"math/rand/v2"
	"testing"
)

// reachableLive counts the live nodes reachable from the entry point over layer-0
// links (through tombstones too, as a search walks).
func reachableLive(x *Index) int {
	s := x.getSearcher()
	defer x.putSearcher(s)
	e := x.ep.Load()
	if e == 0 {
		return 0
	}
	seen := map[uint32]bool{uint32(e): true}
	queue := []uint32{uint32(e)}
	live := 0
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		if s.flagsOf(x, id) == 0 {
			live++
		}
		w, base := x.listOf(s, id, 0)
		for i := 1; i <= int(w[base]); i++ {
			if nb := w[base+i]; !seen[nb] {
				seen[nb] = true
				queue = append(queue, nb)
			}
		}
	}
	return live
}

// TestVacuumKeepsDriftingClusterReachable: keys rewritten again and again with a
// vector that moves away from the rest of the data (a version number in a component)
// leave a chain of tombstones between their live nodes and the others: each new node
// links only to its predecessor, which the next rewrite deletes. A Vacuum must rewire
// across the whole chain, not only one tombstone deep, or the live nodes past it fall
// out of reach: a search starting among them (as it does once one of them is the
// entry point) never finds the others, and one starting elsewhere never finds them.
func TestVacuumKeepsDriftingClusterReachable(t *testing.T) {
	const dim, nStatic, nIDs = 8, 80, 20
	r := rand.New(rand.NewPCG(7, 0x5eed))
	x, err := New(Config{Dim: dim, M: 8, EfConstruction: 64, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	static := make([][]float32, nStatic)
	for i := range static {
		static[i] = make([]float32, dim)
		for j := range static[i] {
			static[i][j] = r.Float32()*2 - 1
		}
		if err := x.Add(uint64(i), static[i]); err != nil {
			t.Fatal(err)
		}
	}
	drifting := func(version int) []float32 {
		v := make([]float32, dim)
		for j := range v {
			v[j] = 100 + float32(j)
		}
		v[0] = 1000 + float32(version)
		return v
	}
	for version := range 2000 {
		key := uint64(nStatic + version%nIDs)
		if err := x.Add(key, drifting(version)); err != nil {
			t.Fatal(err)
		}
		if version%100 == 99 {
			x.Vacuum()
			if got, want := reachableLive(x), x.Len(); got != want {
				t.Fatalf("after %d rewrites and a Vacuum: %d of %d live nodes reachable from the entry point", version+1, got, want)
			}
		}
	}
	checkInvariants(t, x, true)
	// Both ends of the data answer in full, whichever side the entry point is on.
	res, err := x.Search(make([]float32, dim), nStatic, SearchOptions{Ef: 500})
	if err != nil || len(res) != nStatic {
		t.Fatalf("near the origin: %d results, %v", len(res), err)
	}
	for _, h := range res {
		if h.Key >= nStatic {
			t.Fatalf("near the origin: drifting key %d among the %d nearest", h.Key, nStatic)
		}
	}
	res, err = x.Search(drifting(2000), nIDs, SearchOptions{Ef: 500})
	if err != nil || len(res) != nIDs {
		t.Fatalf("near the drifting keys: %d results, %v", len(res), err)
	}
	for _, h := range res {
		if h.Key < nStatic {
			t.Fatalf("near the drifting keys: static key %d among the %d nearest", h.Key, nIDs)
		}
	}
}
