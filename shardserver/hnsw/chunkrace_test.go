package hnsw

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
)

// TestConcurrentAddAcrossChunks inserts from many goroutines while new chunks are being
// published: an insert holding an older snapshot of the chunk table must still read the
// nodes of newer chunks that concurrent inserts link into its lists (a shard server
// crashed on exactly this with "index out of range" before the fix).
func TestConcurrentAddAcrossChunks(t *testing.T) {
	const workers, perWorker, dim = 16, 400, 32
	// More Ps than cores make the interleavings that expose the bug likely even on two cores.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(8))
	for round := range 3 {
		x, err := New(Config{Dim: dim, M: 16, EfConstruction: 64, Seed: int64(round + 1)})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				v := make([]float32, dim)
				for i := range perWorker {
					for j := range v {
						v[j] = rng.Float32()
					}
					if err := x.Add(uint64(w*perWorker+i), v); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if x.Len() != workers*perWorker {
			t.Fatalf("round %d: %d vectors, want %d", round, x.Len(), workers*perWorker)
		}
	}
}
