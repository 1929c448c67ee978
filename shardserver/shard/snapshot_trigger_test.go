package shard

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestSnapshotDue: the snapshot triggers count what a restart would redo (vectors
// written or inserted, WAL bytes), records only when asked, and age only when there
// was work; with no work since the last snapshot nothing is due, however old.
func TestSnapshotDue(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.SnapshotInterval, cfg.SnapshotVectors, cfg.SnapshotWALBytes, cfg.SnapshotRecords = time.Minute, 100, 1000, 0
	s, _ := newTestServer(t, cfg)
	for _, tt := range []struct {
		name    string
		c       ReplayCost
		age     time.Duration
		records int64
		want    bool
	}{
		{"no work, old", ReplayCost{}, time.Hour, 0, false},
		{"little work, young", ReplayCost{Records: 3, WALBytes: 999, Vectors: 99, Indexed: 99}, time.Second, 0, false},
		{"vectors written", ReplayCost{Records: 1, WALBytes: 10, Vectors: 100}, time.Second, 0, true},
		{"vectors inserted by a drain", ReplayCost{Indexed: 100}, time.Second, 0, true},
		{"wal bytes", ReplayCost{Records: 1, WALBytes: 1000, Vectors: 1}, time.Second, 0, true},
		{"records off by default", ReplayCost{Records: 1 << 40, WALBytes: 1, Vectors: 1}, time.Second, 0, false},
		{"records when set", ReplayCost{Records: 10, WALBytes: 1, Vectors: 1}, time.Second, 10, true},
		{"little work, old", ReplayCost{Records: 1, WALBytes: 1, Vectors: 1}, time.Minute, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s.cfg.SnapshotRecords = tt.records
			if got := s.snapshotDue(tt.c, tt.age); got != tt.want {
				t.Fatalf("snapshotDue(%+v, %v) = %v, want %v", tt.c, tt.age, got, tt.want)
			}
		})
	}
}

// TestSnapshotAfterHeavyReplay: a restart that replayed more vectors than
// --snapshot-vectors writes a snapshot as soon as it serves, so the next restart does
// not replay them again; one that replayed fewer does not (the interval is an hour).
func TestSnapshotAfterHeavyReplay(t *testing.T) {
	const threshold = 100
	for _, tt := range []struct {
		name     string
		vectors  int
		snapshot bool
	}{{"above the threshold", 3 * threshold / 2, true}, {"below the threshold", threshold / 2, false}} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			cfg.SnapshotVectors, cfg.SnapshotWALBytes, cfg.SnapshotRecords = threshold, 0, 0
			// The writes, then a crash: the store closes its log and writes no snapshot.
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := newRand(7)
			for from := 0; from < tt.vectors; from += 25 {
				upsertN(t, s.store, r, from, 25)
			}
			if err := s.store.Close(); err != nil {
				t.Fatal(err)
			}
			snapDir := filepath.Join(dir, "snapshots")
			if got := mustSnapshots(t, snapDir); len(got) != 0 {
				t.Fatalf("snapshots before the restart: %v", got)
			}

			s, err = New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			rec, _ := s.store.Recovery()
			if rec.ReplayedVectors != int64(tt.vectors) {
				t.Fatalf("replayed %d vectors, want %d", rec.ReplayedVectors, tt.vectors)
			}
			ctx, cancel := context.WithCancel(context.Background())
			runErr := make(chan error, 1)
			go func() { runErr <- s.Run(ctx, listen(t)) }()
			defer func() {
				cancel()
				if err := <-runErr; err != nil {
					t.Errorf("Run: %v", err)
				}
			}()
			// The loop looks at once on start; give it a few of its one-second ticks.
			deadline := time.Now().Add(3 * time.Second)
			var seqs []uint64
			for len(seqs) == 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
				seqs = mustSnapshots(t, snapDir)
			}
			switch {
			case tt.snapshot && len(seqs) == 0:
				t.Fatal("no snapshot after a replay above the threshold")
			case tt.snapshot && seqs[len(seqs)-1] != s.store.Applied():
				t.Fatalf("snapshot at %v, want the replayed seq %d", seqs, s.store.Applied())
			case !tt.snapshot && len(seqs) != 0:
				t.Fatalf("snapshot %v after a replay below the threshold", seqs)
			}
		})
	}
}
