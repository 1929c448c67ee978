package hnsw

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// contentsOf is an index's key -> vector map, read from outside.
func contentsOf(x *Index) map[uint64][]float32 {
	out := map[uint64][]float32{}
	x.Keys(func(k uint64) bool {
		v, ok, err := x.Get(k)
		if err != nil {
			panic(err)
		}
		if ok {
			out[k] = v
		}
		return true
	})
	return out
}

func sameContents(t *testing.T, got, want map[uint64][]float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Fatalf("key %d: vector %v, want %v", k, got[k], v)
		}
	}
}

// churn upserts, deletes and adds keys of x from a fixed pool, and vacuums.
func churn(t *testing.T, x *Index, data [][]float32, rng *rand.Rand, ops int) {
	t.Helper()
	for range ops {
		k := uint64(rng.IntN(len(data)))
		switch rng.IntN(3) {
		case 0:
			if err := x.Delete(k); err != nil && !errors.Is(err, ErrNotFound) {
				t.Error(err)
				return
			}
		default:
			if err := x.Add(k, data[rng.IntN(len(data))]); err != nil {
				t.Error(err)
				return
			}
		}
	}
}

// TestImageIsOneMoment: an image written while inserts, upserts, deletes and vacuums
// change the index holds exactly the keys and vectors of the moment Freeze returned,
// and loads as a working index.
func TestImageIsOneMoment(t *testing.T) {
	n, ops := 2000, 3000
	if raceEnabled {
		n, ops = 500, 800
	}
	data := clustered(61, n, 16, 8)
	x := build(t, Config{Dim: 16, M: 6, EfConstruction: 40}, data[:n/2])
	for k := range n / 8 {
		if err := x.Delete(uint64(k)); err != nil {
			t.Fatal(err)
		}
	}
	var want map[uint64][]float32
	queries := clustered(63, 50, 16, 8)
	wantRes := make([][]Result, len(queries))
	img := x.Freeze(func() {
		want = contentsOf(x)
		for i, q := range queries {
			wantRes[i], _ = x.Search(q, 10, SearchOptions{})
		}
	})

	// Change everything while the image exists: new keys, upserts, deletes (of keys
	// live in the image among them), and Vacuums, which must wait to free slots.
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() { churn(t, x, data, rand.New(rand.NewPCG(uint64(w), 3)), ops) })
	}
	vacuumed := make(chan struct{})
	go func() { x.Vacuum(); close(vacuumed) }()
	wg.Wait()

	var buf bytes.Buffer
	if _, err := img.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	img.Release()
	<-vacuumed
	y, err := Read(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	sameContents(t, contentsOf(y), want)
	checkInvariants(t, y, false)
	// The same graph: every search answers as the index did at the moment.
	for i, q := range queries {
		if got, _ := y.Search(q, 10, SearchOptions{}); !slices.Equal(got, wantRes[i]) {
			t.Fatalf("query %d: the loaded image answers %v, the index at the moment %v", i, got, wantRes[i])
		}
	}
	for k, v := range want {
		res, err := y.Search(v, 1, SearchOptions{Ef: 100})
		if err != nil || len(res) == 0 || res[0].Distance != 0 {
			t.Fatalf("key %d does not find its own vector in the loaded image: %v, %v", k, res, err)
		}
	}
	// The live index is still consistent once the image is gone and vacuumed.
	x.Vacuum()
	checkInvariants(t, x, true)
}

// blockingWriter accepts one write and then blocks until released, so that a WriteTo
// is held in the middle of its work.
type blockingWriter struct {
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.started) })
	<-b.release
	return len(p), nil
}

// TestWritersRunBesideImageAndVacuum: Add and Delete complete while an image is being
// written and while a Vacuum is in the middle of its pass. Before, both held the
// structure lock for their whole length, and every write waited.
func TestWritersRunBesideImageAndVacuum(t *testing.T) {
	data := clustered(62, 3000, 16, 8)
	x := build(t, Config{Dim: 16, M: 6, EfConstruction: 40}, data[:2000])
	writes := func(from int) error {
		for i := from; i < from+50; i++ {
			if err := x.Add(uint64(i), data[i]); err != nil {
				return err
			}
			if err := x.Delete(uint64(i - 1000)); err != nil {
				return err
			}
		}
		return nil
	}
	done := func(what string, f func() error) {
		t.Helper()
		errc := make(chan error, 1)
		go func() { errc <- f() }()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("writes did not complete %s", what)
		}
	}

	bw := &blockingWriter{started: make(chan struct{}), release: make(chan struct{})}
	wrote := make(chan error, 1)
	go func() { _, err := x.WriteTo(bw); wrote <- err }()
	<-bw.started
	done("while an image is being written", func() error { return writes(2000) })
	close(bw.release)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}

	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	testHookVacuumRepaired = func() { once.Do(func() { close(paused); <-resume }) }
	defer func() { testHookVacuumRepaired = nil }()
	vacuumed := make(chan struct{})
	go func() { x.Vacuum(); close(vacuumed) }()
	<-paused
	done("while a Vacuum is in its pass", func() error { return writes(2050) })
	close(resume)
	<-vacuumed
	x.Vacuum()
	checkInvariants(t, x, true)
}
