package main

// indexParams is what the benchmark asks of the index under test.
type indexParams struct {
	dim            int
	metric         metric
	m              int
	efConstruction int
	efSearch       int
	seed           int64
	capacity       int
	int8           bool // Int8 quantization
}

// annIndex is the small surface the benchmark drives. It keeps run.go independent of the
// index package's exact types, so the measuring code can be tested against an exact index
// and the adapter (index_hnsw.go) is the only file that knows shardserver/hnsw.
type annIndex interface {
	// Add inserts vec under key; safe for concurrent use, as the parallel build needs.
	Add(key uint64, vec []float32) error
	// NewSearcher returns a searcher for one goroutine, owning its result buffers so that a
	// steady-state search allocates nothing.
	NewSearcher() searcher
	// MemoryBytes reports the index's own memory: vectors plus graph.
	MemoryBytes() int64
	// Len reports the number of vectors indexed.
	Len() int
}

// searcher runs queries for one goroutine.
type searcher interface {
	// Search appends the keys of the k nearest vectors found with beam width ef to
	// keys[:0], nearest first, and returns the slice.
	Search(keys []uint64, q []float32, k, ef int) ([]uint64, error)
}

// reranker is an index that can re-rank its candidates exactly (int8 with float32
// vectors beside it); the benchmark turns it on and off between sweeps.
type reranker interface {
	SetRerank(on bool)
}

// closeIndex releases what an index holds outside the Go heap, if anything.
func closeIndex(idx annIndex) {
	if c, ok := idx.(interface{ Close() error }); ok {
		_ = c.Close()
	}
}

// indexFactory builds an empty index. The command uses newHNSW; it is a config field so that
// tests can measure the harness itself against an exact index.
type indexFactory func(p indexParams) (annIndex, error)
