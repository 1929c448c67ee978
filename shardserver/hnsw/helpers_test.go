package hnsw

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// raceEnabled is set by race_test.go under -race; heavy tests shrink or skip then
// (the same tests run in full in the non-race pass).

// clustered returns n vectors of dim elements drawn from Gaussian clusters around
// `clusters` random centres, with a fixed seed. Within a cluster the spread lives
// mostly in a random 16-dimensional subspace plus a little isotropic noise: like
// real embeddings, the data has a low intrinsic dimension (isotropic noise in all
// dims would be a far harder, unrealistic case for any graph index).
func clustered(seed uint64, n, dim, clusters int) [][]float32 {
	return clusteredLatent(seed, n, dim, clusters, 16, 0.1)
}

// clusteredLatent is clustered with a chosen intrinsic dimension and noise: the
// benchmarks use a harder shape than the unit tests.
func clusteredLatent(seed uint64, n, dim, clusters, latent int, noise float64) [][]float32 {
	rng := rand.New(rand.NewPCG(seed, 7))
	// The centres and the subspace depend only on the shape, so base and query
	// sets made with different seeds share them.
	shape := rand.New(rand.NewPCG(uint64(dim)<<32|uint64(clusters)<<8|uint64(latent), 11))
	centres := make([][]float32, clusters)
	for i := range centres {
		centres[i] = make([]float32, dim)
		for j := range centres[i] {
			centres[i][j] = float32(shape.NormFloat64() * 2)
		}
	}
	basis := make([][]float32, latent)
	for i := range basis {
		basis[i] = make([]float32, dim)
		for j := range basis[i] {
			basis[i][j] = float32(shape.NormFloat64() / math.Sqrt(float64(latent)))
		}
	}
	out := make([][]float32, n)
	for i := range out {
		c := centres[rng.IntN(clusters)]
		v := make([]float32, dim)
		copy(v, c)
		for _, b := range basis {
			z := float32(rng.NormFloat64())
			for j := range v {
				v[j] += z * b[j]
			}
		}
		for j := range v {
			v[j] += float32(rng.NormFloat64() * noise)
		}
		out[i] = v
	}
	return out
}

func refDist(m Metric, a, b []float32) float64 {
	switch m {
	case L2:
		var s float64
		for i := range a {
			d := float64(a[i]) - float64(b[i])
			s += d * d
		}
		return s
	default:
		var d, na, nb float64
		for i := range a {
			d += float64(a[i]) * float64(b[i])
			na += float64(a[i]) * float64(a[i])
			nb += float64(b[i]) * float64(b[i])
		}
		if m == Cosine {
			return 1 - d/math.Sqrt(na*nb)
		}
		return 1 - d
	}
}

// bruteForce returns the keys of the k nearest of data (keyed by index, only those
// for which keep returns true) to q.
func bruteForce(m Metric, data [][]float32, keep func(uint64) bool, q []float32, k int) []uint64 {
	type kd struct {
		k uint64
		d float64
	}
	all := make([]kd, 0, len(data))
	for i, v := range data {
		if v == nil || (keep != nil && !keep(uint64(i))) {
			continue
		}
		all = append(all, kd{uint64(i), refDist(m, q, v)})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].d < all[j].d })
	out := make([]uint64, 0, k)
	for i := 0; i < k && i < len(all); i++ {
		out = append(out, all[i].k)
	}
	return out
}

// recallAt returns the mean fraction of the true k nearest found by the index.
func recallAt(t testing.TB, x *Index, data, queries [][]float32, keep func(uint64) bool, k, ef int) float64 {
	t.Helper()
	var hit, total int
	for _, q := range queries {
		want := bruteForce(x.Config().Metric, data, keep, q, k)
		got, err := x.Search(q, k, SearchOptions{Ef: ef, Filter: keep})
		if err != nil {
			t.Fatal(err)
		}
		set := make(map[uint64]bool, len(got))
		for _, r := range got {
			set[r.Key] = true
		}
		for _, w := range want {
			if set[w] {
				hit++
			}
		}
		total += len(want)
	}
	return float64(hit) / float64(total)
}

func build(t testing.TB, cfg Config, data [][]float32) *Index {
	t.Helper()
	x, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range data {
		if err := x.Add(uint64(i), v); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

// checkInvariants verifies the index's internal consistency: the key map, the
// counters, the free list and the flags agree; links point to used slots that
// have the layer; after a Vacuum nothing links to a tombstone.
func checkInvariants(t testing.TB, x *Index, vacuumed bool) {
	t.Helper()
	// A Vacuum started in the background by a Delete runs beside writers: wait for
	// it, and hold off the next one.
	x.vacMu.Lock()
	defer x.vacMu.Unlock()
	x.structMu.Lock()
	defer x.structMu.Unlock()
	s := x.getSearcher()
	defer x.putSearcher(s)
	n := x.nslots.Load()
	var live, dead, free int
	for id := range n {
		f := x.flagsIn(s.tbl, id)
		switch {
		case f == 0:
			live++
			if got, ok := x.keys[x.keyIn(s.tbl, id)]; !ok || got != id {
				t.Fatalf("live slot %d (key %d) is not in the key map", id, x.keyIn(s.tbl, id))
			}
		case f == flagDeleted:
			dead++
		case f == flagFree:
			free++
			continue
		default:
			t.Fatalf("slot %d: flags %#x at rest", id, f)
		}
		for l := 0; l <= x.levelIn(s.tbl, id); l++ {
			w, base := x.listOf(s, id, l)
			for i := 1; i <= int(w[base]); i++ {
				nb := w[base+i]
				nf := x.flagsIn(s.tbl, nb)
				if nb >= n || nf&flagFree != 0 || x.levelIn(s.tbl, nb) < l || nb == id {
					t.Fatalf("slot %d layer %d links to bad slot %d (flags %#x)", id, l, nb, nf)
				}
				if vacuumed && nf&flagDeleted != 0 {
					t.Fatalf("slot %d layer %d links to tombstone %d after Vacuum", id, l, nb)
				}
			}
		}
	}
	if live != len(x.keys) || int64(live) != x.live.Load() || int64(dead) != x.deleted.Load() || free != len(x.free) {
		t.Fatalf("live %d (map %d, counter %d), dead %d (counter %d), free %d (list %d)",
			live, len(x.keys), x.live.Load(), dead, x.deleted.Load(), free, len(x.free))
	}
	if e := x.ep.Load(); (e == 0) != (live+dead == 0) {
		t.Fatalf("entry point %#x with %d used slots", e, live+dead)
	}
}

// get is x.Get for a test: an error fails it.
func get(t testing.TB, x *Index, key uint64) ([]float32, bool) {
	t.Helper()
	v, ok, err := x.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	return v, ok
}
