package hnsw

import "testing"

// TestSearchSkipsNodeBeingInserted: an insert links a node's layers top-down, and its
// upper-layer neighbours link back to it before it has a layer-0 list. A search whose
// descent reaches it there must not start its layer-0 walk from it (the walk would end
// at once, with nothing but that node, which an upsert keeps pending and unreturned).
func TestSearchSkipsNodeBeingInserted(t *testing.T) {
	const n, dim, k = 300, 8, 10
	data := clustered(43, n, dim, 3)
	for _, quant := range []Quantization{NoQuantization, Int8} {
		x := build(t, Config{Dim: dim, M: 4, Seed: 1, Quantization: quant, VectorDir: t.TempDir()}, data)
		e := x.ep.Load()
		top, epID := int(e>>32)-1, uint32(e)
		if top < 1 {
			t.Fatalf("top layer %d: the test needs upper layers", top)
		}
		// An upsert of key 0 to the query's own vector, stopped after its top layer is
		// linked: the entry point links to it there, its lower lists are still empty.
		q := make([]float32, dim)
		copy(q, data[n-1])
		q[0] += 0.01
		s := x.getSearcher()
		id := x.allocSlot(0, q, top, flagPending)
		x.addBackLink(s, epID, id, top, x.m)
		x.putSearcher(s)
		res, err := x.Search(q, k, SearchOptions{})
		if err != nil || len(res) != k {
			t.Fatalf("quantization %v: %d results, want %d: %v %v", quant, len(res), k, res, err)
		}
	}
}
