package shard

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/wal"
)

// TestRunDrainsAndSnapshots cancels Run while writes are in flight: every request the
// server had accepted completes with 200, Run returns nil, and a snapshot at the last
// sequence number is on disk.
func TestRunDrainsAndSnapshots(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxBatch = 2000
	cfg.MaxBodyBytes = 8 << 20
	cfg.DrainTimeout = time.Minute // the race detector slows inserts ten-fold
	batch := 1500
	if raceEnabled {
		batch = 200
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx, ln) }()
	c := client.New("http://" + ln.Addr().String())
	for c.Ready(context.Background()) != nil {
		time.Sleep(5 * time.Millisecond)
	}
	r := newRand(3)
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range 6 {
		req := &client.UpsertRequest{}
		for i := range batch { // big batches keep each request busy for a while
			req.Vectors = append(req.Vectors, client.Vector{ID: fmt.Sprintf("w%d-%d", w, i), Vector: randVec(r, testDim)})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Upsert(context.Background(), req); err != nil {
				failed.Add(1)
				return
			}
			ok.Add(1)
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.load.inFlight.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	inFlight := s.load.inFlight.Load()
	if inFlight == 0 {
		t.Fatal("no request was in flight when shutdown began: the test would prove nothing")
	}
	cancel()
	wg.Wait()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if ok.Load() < inFlight {
		t.Fatalf("%d requests were in flight at shutdown but only %d succeeded (%d failed)", inFlight, ok.Load(), failed.Load())
	}
	_, seq, _, err := wal.LatestSnapshot(filepath.Join(cfg.DataDir, "snapshots"))
	if err != nil || seq != uint64(ok.Load()) {
		t.Fatalf("snapshot at %d (%v), want %d: one per acknowledged batch", seq, err, ok.Load())
	}
	s2, err := OpenStore(StoreConfig{DataDir: cfg.DataDir, Index: s.store.cfg.Index, WAL: s.store.cfg.WAL})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Len() != int(ok.Load())*batch {
		t.Fatalf("%d vectors after restart, want %d", s2.Len(), int(ok.Load())*batch)
	}
}
