package shard

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/slots"
	"github.com/annshard/annshard/shardserver/wal"
)

// waitDrain waits until the drain started by the last recovery or bootstrap is done.
func (s *Store) waitDrain() {
	s.applyMu.Lock()
	done := s.drainDone
	s.applyMu.Unlock()
	if done != nil {
		<-done
	}
}

// holdDrain makes the next drains wait until the returned release is called.
func holdDrain(t *testing.T) (release func()) {
	gate := make(chan struct{})
	testHookDrain = func() { <-gate }
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(func() { release(); testHookDrain = nil })
	return release
}

// checkFindsAll checks that every id of want is found by get (its exact vector) and by a
// search for its own vector, at distance 0, also within its partition.
func checkFindsAll(t *testing.T, s *Store, want map[string]string) {
	t.Helper()
	if got := contents(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("store holds %d ids, want %d (same: %v)", len(got), len(want), reflect.DeepEqual(got, want))
	}
	for id := range want {
		v, ok := get(t, s, id, s.hidden.Load())
		if !ok {
			t.Fatalf("get %s: not found", id)
		}
		hits, err := s.Search(v.Vector, 1, 64, v.Partition)
		if err != nil || len(hits) == 0 || hits[0].Distance != 0 {
			t.Fatalf("search for %s's own vector: %v, %v", id, hits, err)
		}
	}
}

// TestRecoveryServesBeforeTheGraphHasTheTail: after a restart the WAL's vectors are in
// the tail, not the graph; while the drain is held, every acknowledged write is found by
// get and search, writes go on (and are found), and a snapshot taken then restores the
// same. Once the drain ran, the tail is empty and the contents are unchanged.
func TestRecoveryServesBeforeTheGraphHasTheTail(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(testStoreConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(21, 22))
	for b := range 6 {
		upsertN(t, s, r, b*20, 30) // overlapping batches: upserts of existing ids
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	release := holdDrain(t)
	s2, err := OpenStore(testStoreConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	rep, _ := s2.Recovery()
	if s2.Unindexed() == 0 || rep.ReplayedVectors != 180 || rep.TailVectors != s2.Unindexed() {
		t.Fatalf("after replay: %d unindexed, report %+v", s2.Unindexed(), rep)
	}
	checkFindsAll(t, s2, contents(s))

	// Writes while the drain is held: new ids, upserts of ids only in the tail and of
	// ids in the graph, deletes of both.
	upsertN(t, s2, r, 100, 40)
	del := []deleteItem{{id: "k5", slot: s2.SlotOf("k5", "")}, {id: "k120", slot: s2.SlotOf("k120", "")}}
	if _, _, err := s2.Write(context.Background(), record{op: opDelete, deletes: del}); err != nil {
		t.Fatal(err)
	}
	want := contents(s2)
	checkFindsAll(t, s2, want)

	// A snapshot of a store with a tail holds the tail.
	if err := s2.Snapshot(); err != nil {
		t.Fatal(err)
	}
	_, snap := s2.Recovery()
	if snap == nil || snap.TailVectors == 0 {
		t.Fatalf("snapshot report %+v: no tail", snap)
	}
	snapOnly := t.TempDir()
	copyDir(t, filepath.Join(dir, "snapshots"), filepath.Join(snapOnly, "snapshots"))
	s3, err := OpenStore(testStoreConfig(snapOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	checkFindsAll(t, s3, want)

	release()
	s2.waitDrain()
	s3.waitDrain()
	for _, st := range []*Store{s2, s3} {
		if n := st.Unindexed(); n != 0 {
			t.Fatalf("%d vectors left in the tail after the drain", n)
		}
		checkFindsAll(t, st, want)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestParallelReplayMatchesSerial: the same WAL replayed with one insert worker and with
// several gives the same ids, vectors and keys, and graphs of the same recall.
func TestParallelReplayMatchesSerial(t *testing.T) {
	n := 3000
	if raceEnabled {
		n = 600
	}
	dir := t.TempDir()
	cfg := testStoreConfig(dir)
	cfg.WAL.SegmentBytes = 1 << 20
	s, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(31, 32))
	for from := 0; from < n; from += 100 {
		upsertN(t, s, r, from, 100)
		if from%700 == 0 {
			del := []deleteItem{{id: fmt.Sprintf("k%d", from+3), slot: s.SlotOf(fmt.Sprintf("k%d", from+3), "")}}
			if _, _, err := s.Write(context.Background(), record{op: opDelete, deletes: del}); err != nil {
				t.Fatal(err)
			}
		}
	}
	upsertN(t, s, r, 50, 200) // upserts of existing ids
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	open := func(workers int) *Store {
		d := t.TempDir()
		copyDir(t, filepath.Join(dir, "wal"), filepath.Join(d, "wal"))
		c := cfg
		c.DataDir, c.DrainWorkers = d, workers
		st, err := OpenStore(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		st.waitDrain()
		return st
	}
	serial, parallel := open(1), open(4)
	if !reflect.DeepEqual(contents(serial), contents(parallel)) {
		t.Fatal("serial and parallel replays hold different vectors")
	}
	if !reflect.DeepEqual(serial.st.ids, parallel.st.ids) || !reflect.DeepEqual(serial.st.entries, parallel.st.entries) {
		t.Fatal("serial and parallel replays assigned different keys")
	}
	queries := make([][]float32, 100)
	for i := range queries {
		queries[i] = randVec(r, testDim)
	}
	rs, rp := storeRecall(t, serial, queries), storeRecall(t, parallel, queries)
	t.Logf("recall@10: serial %.4f, parallel %.4f", rs, rp)
	if rp < rs-0.02 {
		t.Fatalf("parallel replay recall %.4f, serial %.4f", rp, rs)
	}
}

// storeRecall is the recall@10 of s's searches against an exact scan of its contents.
func storeRecall(t *testing.T, s *Store, queries [][]float32) float64 {
	t.Helper()
	type item struct {
		id string
		v  []float32
	}
	var all []item
	for id := range s.st.ids {
		v, _ := get(t, s, id, s.hidden.Load())
		all = append(all, item{id, v.Vector})
	}
	dist := hnsw.DistanceFunc(hnsw.L2)
	hit := 0
	for _, q := range queries {
		slices.SortFunc(all, func(a, b item) int { return cmp.Compare(dist(q, a.v), dist(q, b.v)) })
		truth := map[string]bool{}
		for _, it := range all[:10] {
			truth[it.id] = true
		}
		hits, err := s.Search(q, 10, 32, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hits {
			if truth[h.ID] {
				hit++
			}
		}
	}
	return float64(hit) / float64(10*len(queries))
}

// TestSnapshotIsOneSeq: snapshots taken while writers run each describe exactly the
// state after the records up to their sequence number, as the acknowledged writes say.
func TestSnapshotIsOneSeq(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(testStoreConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	type write struct {
		seq uint64
		id  string
		vec []float32 // nil: deleted
	}
	var mu sync.Mutex
	var writes []write
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 41))
			for i := range 60 {
				id := fmt.Sprintf("w%d-%d", w, r.IntN(25))
				rec := record{op: opUpsert, upserts: []upsertItem{{id: id, vec: randVec(r, testDim), slot: slots.Of(id)}}}
				if i%5 == 4 {
					rec = record{op: opDelete, deletes: []deleteItem{{id: id, slot: slots.Of(id)}}}
				}
				seq, _, err := s.Write(context.Background(), rec)
				if err != nil {
					t.Error(err)
					return
				}
				wr := write{seq: seq, id: id}
				if rec.op == opUpsert {
					wr.vec = rec.upserts[0].vec
				}
				mu.Lock()
				writes = append(writes, wr)
				mu.Unlock()
			}
		})
	}
	snapDirs := map[string]bool{}
	for range 5 {
		if err := s.Snapshot(); err != nil {
			t.Fatal(err)
		}
		d := t.TempDir()
		copyDir(t, filepath.Join(dir, "snapshots"), filepath.Join(d, "snapshots"))
		snapDirs[d] = true
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	slices.SortFunc(writes, func(a, b write) int { return cmp.Compare(a.seq, b.seq) })
	for d := range snapDirs {
		path, seq, _, err := wal.LatestSnapshot(filepath.Join(d, "snapshots"))
		if err != nil || path == "" {
			t.Fatalf("no snapshot in %s: %v", d, err)
		}
		want := map[string]string{}
		for _, w := range writes {
			if w.seq > seq {
				break
			}
			delete(want, w.id)
			if w.vec != nil {
				want[w.id] = fmt.Sprint("", w.vec)
			}
		}
		// Only the newest snapshot is opened: the copy holds no log after it.
		for _, old := range mustSnapshots(t, filepath.Join(d, "snapshots"))[1:] {
			os.Remove(wal.SnapshotPath(filepath.Join(d, "snapshots"), old))
		}
		got, err := OpenStore(testStoreConfig(d))
		if err != nil {
			t.Fatal(err)
		}
		if got.Applied() != seq || !maps.Equal(contents(got), want) {
			t.Fatalf("snapshot at seq %d holds %d ids at seq %d; the writes up to it leave %d", seq, len(contents(got)), got.Applied(), len(want))
		}
		got.Close()
	}
}

func mustSnapshots(t *testing.T, dir string) []uint64 {
	t.Helper()
	seqs, err := wal.Snapshots(dir)
	if err != nil {
		t.Fatal(err)
	}
	return seqs
}
