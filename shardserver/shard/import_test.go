package shard

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

// waitImport polls a job until ok(status) or the deadline.
func waitImport(t *testing.T, c *client.Client, id string, what string, ok func(*client.ImportStatus) bool) *client.ImportStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := c.ImportStatus(context.Background(), id)
		if err == nil && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("import %s: %s not reached: %+v, %v", id, what, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestImportHandoverUnderLoad moves a slot set from one shard to another while writers
// and searchers run: import, freeze, catch up to the freeze's seq, hand over, drop. Every
// acknowledged write is read back from the shard that owns its slot afterwards, and a
// search merged over both shards the way a router does (asking at its epoch, keeping of
// each shard's hits only the slots its table gives that shard) never answers an id twice
// or misses one, in every window of the handover.
func TestImportHandoverUnderLoad(t *testing.T) {
	src, srcHS := newTestServer(t, testConfig(t.TempDir()))
	_, dstHS := newTestServer(t, testConfig(t.TempDir()))
	sc, dc := client.New(srcHS.URL), client.New(dstHS.URL)
	ctx := context.Background()
	moving := slots.Range(0, 2047)
	if _, err := sc.SetSlots(ctx, &client.SlotsRequest{Slots: slots.All().String(), Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.SetSlots(ctx, &client.SlotsRequest{Slots: "", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	// 80 static ids near the origin, never rewritten: a search for k=80 near them must
	// answer each exactly once. Writers rewrite 40 other ids, far away (every component
	// past 100), carrying their version in the first component.
	const nStatic, nIDs = 80, 40
	static := make([]string, nStatic)
	r := newRand(7)
	for i := range static {
		static[i] = fmt.Sprintf("static-%d", i)
		if _, err := sc.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: static[i], Vector: randVec(r, testDim)}}}); err != nil {
			t.Fatal(err)
		}
	}
	ids := make([]string, nIDs)
	for i := range ids {
		ids[i] = fmt.Sprintf("id-%d", i)
	}
	vecOf := func(version float32) []float32 {
		v := make([]float32, testDim)
		for i := range v {
			v[i] = 100 + float32(i)
		}
		v[0] = 1000 + version
		return v
	}

	// The routing table as the test's "router" sees it: epoch 1 all on src, 2 moved.
	var epoch atomic.Uint64
	epoch.Store(1)
	owner := func(id string) *client.Client {
		if epoch.Load() >= 2 && moving.Has(slots.Of(id)) {
			return dc
		}
		return sc
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[string]float32{}
	var writeErr, searchErr atomic.Value
	var writes, moved, searches atomic.Int64
	for w := range 2 {
		wg.Go(func() {
			version := float32(w * 1000000)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := ids[(i*2+w)%nIDs] // each writer its own ids
				version++
				// Like the router: a write refused as moved waits for the new table and retries.
				for attempt := 0; ; attempt++ {
					_, err := owner(id).Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: id, Vector: vecOf(version)}}})
					if err == nil {
						break
					}
					if !client.IsCode(err, client.CodeMoved) || attempt > 500 {
						writeErr.Store(fmt.Errorf("upsert %s: %w", id, err))
						return
					}
					moved.Add(1)
					time.Sleep(10 * time.Millisecond)
				}
				writes.Add(1)
				mu.Lock()
				acked[id] = version
				mu.Unlock()
			}
		})
	}
	qr := newRand(8)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			e := epoch.Load()
			q := &client.SearchRequest{Vector: randVec(qr, testDim), K: nStatic, Ef: 500}
			seen := map[string]int{}
			for _, c := range []*client.Client{sc, dc} {
				resp, err := c.Search(client.WithEpoch(ctx, e), q)
				if err != nil {
					searchErr.Store(err)
					return
				}
				for _, h := range resp.Results {
					inMoving := moving.Has(slots.Of(h.ID))
					ownsIt := (c == dc) == (e >= 2 && inMoving)
					if ownsIt {
						seen[h.ID]++
					}
				}
			}
			if epoch.Load() != e {
				continue // the table changed during the search: a router would retry
			}
			for _, id := range static {
				if seen[id] != 1 {
					searchErr.Store(fmt.Errorf("epoch %d: id %s (slot %d) answered %d times", e, id, slots.Of(id), seen[id]))
					return
				}
			}
			searches.Add(1)
		}
	})

	if _, err := dc.StartImport(ctx, &client.ImportRequest{ID: "m1", Slots: moving.String(), Source: srcHS.URL, Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	again, err := dc.StartImport(ctx, &client.ImportRequest{ID: "m1", Slots: moving.String(), Source: srcHS.URL, Epoch: 1})
	if err != nil || again.ID != "m1" {
		t.Fatalf("starting the same import again: %+v, %v", again, err)
	}
	waitImport(t, dc, "m1", "catching up", func(s *client.ImportStatus) bool { return s.Phase == client.ImportCatchingUp })
	time.Sleep(300 * time.Millisecond) // writes during the catch-up
	// Importing slots take no client write and are not visible on the destination.
	if _, err := dc.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: ids[0], Vector: vecOf(-1)}}}); moving.Has(slots.Of(ids[0])) && !client.IsCode(err, client.CodeMoved) {
		t.Fatalf("write to an importing slot: %v, want moved", err)
	}

	fr, err := sc.FreezeSlots(ctx, &client.SlotsRequest{Slots: moving.String(), Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	frozenAt := time.Now()
	st := waitImport(t, dc, "m1", fmt.Sprintf("applied seq %d", fr.Seq), func(s *client.ImportStatus) bool { return s.AppliedSeq >= fr.Seq })
	t.Logf("caught up with the freeze (seq %d) in %v: %+v", fr.Seq, time.Since(frozenAt), *st)
	// The operator's order: the table at epoch 2 first (routers read by it at once),
	// then the destination takes the slots, then the source learns the table.
	epoch.Store(2)
	time.Sleep(50 * time.Millisecond)
	if _, err := dc.FinishImport(ctx, "m1", 2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := sc.SetSlots(ctx, &client.SlotsRequest{Slots: slots.All().Minus(moving).String(), Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	t.Logf("write pause %v", time.Since(frozenAt))
	time.Sleep(300 * time.Millisecond) // writes after the handover
	if _, err := sc.DropSlots(ctx, &client.SlotsRequest{Slots: moving.String(), Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if err, _ := writeErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	if err, _ := searchErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes (%d moved and retried), %d merged searches checked", writes.Load(), moved.Load(), searches.Load())
	if searches.Load() == 0 || writes.Load() == 0 {
		t.Fatal("no load ran")
	}
	final, _ := dc.ImportStatus(ctx, "m1")
	if final.Phase != client.ImportDone {
		t.Fatalf("import phase %s, want Done", final.Phase)
	}
	for id, version := range acked {
		v, err := owner(id).Get(ctx, id, "")
		if err != nil || v.Vector[0] != 1000+version {
			t.Fatalf("%s: acknowledged version %v, read %+v, %v", id, version, v, err)
		}
	}
	for _, id := range append(ids, static...) {
		if moving.Has(slots.Of(id)) {
			if _, err := sc.Get(ctx, id, ""); !client.IsCode(err, client.CodeNotFound) {
				t.Fatalf("%s still on the source after the drop: %v", id, err)
			}
			if _, err := dc.Get(ctx, id, ""); err != nil && !client.IsCode(err, client.CodeNotFound) {
				t.Fatal(err)
			}
		}
	}
	if src.store.Len() >= nIDs+nStatic {
		t.Fatalf("source holds %d vectors after the drop", src.store.Len())
	}
}

// TestImportCancelAndRules: cancel drops the partial copy; the epoch rule and the
// ownership checks refuse what would break the one-owner invariant.
func TestImportCancelAndRules(t *testing.T) {
	_, srcHS := newTestServer(t, testConfig(t.TempDir()))
	dst, dstHS := newTestServer(t, testConfig(t.TempDir()))
	sc, dc := client.New(srcHS.URL), client.New(dstHS.URL)
	ctx := context.Background()
	moving := slots.Range(100, 3000)
	if _, err := dc.SetSlots(ctx, &client.SlotsRequest{Slots: slots.All().Minus(moving).String(), Epoch: 3}); err != nil {
		t.Fatal(err)
	}
	in, _ := idsInSlots(moving, 30)
	var vecs []client.Vector
	r := newRand(1)
	for _, id := range in {
		vecs = append(vecs, client.Vector{ID: id, Vector: randVec(r, testDim)})
	}
	if _, err := sc.Upsert(ctx, &client.UpsertRequest{Vectors: vecs}); err != nil {
		t.Fatal(err)
	}
	for name, req := range map[string]client.ImportRequest{
		"owned slots": {ID: "x", Slots: "0-200", Source: srcHS.URL, Epoch: 3},
		"stale epoch": {ID: "x", Slots: moving.String(), Source: srcHS.URL, Epoch: 2},
	} {
		if _, err := dc.StartImport(ctx, &req); !client.IsCode(err, client.CodeConflict) {
			t.Errorf("%s: %v, want conflict", name, err)
		}
	}
	if _, err := dc.StartImport(ctx, &client.ImportRequest{ID: "c", Slots: moving.String(), Source: srcHS.URL, Epoch: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.StartImport(ctx, &client.ImportRequest{ID: "c2", Slots: "150", Source: srcHS.URL, Epoch: 3}); !client.IsCode(err, client.CodeConflict) {
		t.Fatalf("overlapping import: %v, want conflict", err)
	}
	waitImport(t, dc, "c", "catching up", func(s *client.ImportStatus) bool {
		return s.Phase == client.ImportCatchingUp && s.Copied == int64(len(in))
	})
	if dst.store.Len() != len(in) {
		t.Fatalf("destination holds %d, want %d", dst.store.Len(), len(in))
	}
	if _, err := dc.Get(ctx, in[0], ""); !client.IsCode(err, client.CodeNotFound) {
		t.Fatalf("an importing slot is visible: %v", err)
	}
	st, err := dc.CancelImport(ctx, "c")
	if err != nil || st.Phase != client.ImportCancelled {
		t.Fatalf("cancel: %+v, %v", st, err)
	}
	if dst.store.Len() != 0 {
		t.Fatalf("the partial copy was not dropped: %d vectors", dst.store.Len())
	}
	if _, err := dc.FinishImport(ctx, "c", 4); !client.IsCode(err, client.CodeConflict) {
		t.Fatalf("finishing a cancelled import: %v", err)
	}
	if _, err := dc.ImportStatus(ctx, "nope"); !client.IsCode(err, client.CodeNotFound) {
		t.Fatalf("unknown import: %v", err)
	}
	// Freeze and unfreeze follow the epoch rule.
	if _, err := sc.SetSlots(ctx, &client.SlotsRequest{Slots: slots.All().String(), Epoch: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.FreezeSlots(ctx, &client.SlotsRequest{Slots: "1-2", Epoch: 4}); !client.IsCode(err, client.CodeConflict) {
		t.Fatalf("freeze at an older epoch: %v", err)
	}
	if _, err := sc.FreezeSlots(ctx, &client.SlotsRequest{Slots: "1-2", Epoch: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.SetSlots(ctx, &client.SlotsRequest{Slots: slots.All().String(), Frozen: "1-2", Epoch: 6}); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.UnfreezeSlots(ctx, &client.SlotsRequest{Slots: "1-2", Epoch: 5}); !client.IsCode(err, client.CodeConflict) {
		t.Fatalf("unfreeze after the epoch moved on: %v", err)
	}
	if got, err := sc.UnfreezeSlots(ctx, &client.SlotsRequest{Slots: "1-2", Epoch: 6}); err != nil || got.Frozen != "" {
		t.Fatalf("unfreeze: %+v, %v", got, err)
	}
	// A drop (say, a stale one) never deletes slots the shard serves writes for.
	if _, err := sc.DropSlots(ctx, &client.SlotsRequest{Slots: "1-2", Epoch: 6}); !client.IsCode(err, client.CodeConflict) {
		t.Fatalf("dropping owned, unfrozen slots: %v", err)
	}
	// Freeze and finish never move the epoch: a table the shard has not adopted yet is
	// still adopted after them.
	if _, err := sc.FreezeSlots(ctx, &client.SlotsRequest{Slots: "1-2", Epoch: 9}); err != nil {
		t.Fatal(err)
	}
	if got, _ := sc.Slots(ctx); got.Epoch != 6 {
		t.Fatalf("a freeze at epoch 9 moved the shard's epoch to %d", got.Epoch)
	}
}

// TestAdoptNeverLosesAFreeze: tables adopted while a freeze lands keep it (the old
// adoptTable read the frozen set, unlocked, then wrote it back over a freeze made in
// between), and a stale table never undoes a newer epoch.
func TestAdoptNeverLosesAFreeze(t *testing.T) {
	s, _ := newTestServer(t, testConfig(t.TempDir()))
	frozen := slots.Range(10, 19)
	for round := range 40 {
		base := uint64(round*10 + 1)
		if err := s.slots.set(slots.All(), slots.Set{}, base); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var froze atomic.Bool
		wg.Go(func() {
			for e := base + 1; e < base+10; e++ {
				if err := s.adoptTable(slots.Table{Epoch: e, Shards: 1}); err != nil {
					t.Error(err)
				}
			}
		})
		wg.Go(func() {
			for !froze.Load() {
				if err := s.slots.freeze(frozen, s.slots.currentEpoch()); err == nil {
					froze.Store(true)
				}
			}
		})
		wg.Wait()
		st := s.slots.snapshot()
		if st.Frozen != frozen.String() || st.Epoch != base+9 {
			t.Fatalf("round %d: after the tables and a freeze: frozen %q epoch %d, want %q at %d", round, st.Frozen, st.Epoch, frozen.String(), base+9)
		}
		if err := s.adoptTable(slots.Table{Epoch: base, Shards: 1}); err != nil || s.slots.currentEpoch() != base+9 {
			t.Fatalf("a stale table changed the epoch: %v", err)
		}
	}
}

// TestWALHoldKeepsRecords: a slot stream's hold keeps the WAL it needs through
// snapshots that would trim it, and lets go holdLinger after the stream ended.
func TestWALHoldKeepsRecords(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.SegmentBytes = 4096
	s, hs := newTestServer(t, cfg)
	c := client.New(hs.URL)
	ctx := context.Background()
	r := newRand(3)
	write := func(n int) {
		for i := range n {
			if _, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: fmt.Sprintf("h-%d", i), Vector: randVec(r, testDim)}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(50)
	release := s.holds.hold("0-99", 5)
	for range 3 {
		write(50)
		if err := s.store.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	if first := s.store.Log().FirstSeq(); first == 0 || first > 5 {
		t.Fatalf("the WAL starts at %d under a hold from 5", first)
	}
	release()
	s.holds.mu.Lock()
	s.holds.m["0-99"].until = time.Now().Add(-time.Second) // holdLinger passed
	s.holds.mu.Unlock()
	write(50)
	if err := s.store.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if first := s.store.Log().FirstSeq(); first <= 5 {
		t.Fatalf("the WAL still starts at %d once the hold expired", first)
	}
}

// TestImportCopiesAfreshWhenTheWALIsGone: a destination that comes back after the
// source trimmed the WAL it needs (no hold kept it) copies the slots afresh, and ends
// with exactly the source's vectors of the slots, deletes included.
func TestImportCopiesAfreshWhenTheWALIsGone(t *testing.T) {
	scfg := testConfig(t.TempDir())
	scfg.SegmentBytes = 4096
	src, srcHS := newTestServer(t, scfg)
	sc := client.New(srcHS.URL)
	ctx := context.Background()
	moving := slots.Range(0, 2047)
	in, _ := idsInSlots(moving, 60)
	r := newRand(5)
	for _, id := range in {
		if _, err := sc.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: id, Vector: randVec(r, testDim)}}}); err != nil {
			t.Fatal(err)
		}
	}
	dcfg := testConfig(t.TempDir())
	dst, err := New(dcfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.slots.set(slots.Set{}, slots.Set{}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.startImport(client.ImportRequest{ID: "g", Slots: moving.String(), Source: srcHS.URL}); err != nil {
		t.Fatal(err)
	}
	for st, _ := dst.importStatus("g"); st.Phase != client.ImportCatchingUp; st, _ = dst.importStatus("g") {
		time.Sleep(10 * time.Millisecond)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	// While the destination is down: deletes and rewrites, and the source trims.
	for i, id := range in[:30] {
		if i%2 == 0 {
			_, err = sc.DeleteBatch(ctx, &client.DeleteRequest{IDs: []string{id}})
		} else {
			_, err = sc.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: id, Vector: randVec(r, testDim)}}})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	src.holds.mu.Lock()
	for _, h := range src.holds.m {
		h.until = time.Now().Add(-time.Second)
	}
	src.holds.mu.Unlock()
	for range 3 {
		for i := range 20 {
			if _, err := sc.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: fmt.Sprintf("pad-%d", i), Vector: randVec(r, testDim)}}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := src.store.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	dst, err = New(dcfg) // resumes the job
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, _ := dst.importStatus("g")
		if st.Copies >= 2 && st.Phase == client.ImportCatchingUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fresh copy: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, id := range in {
		want, wok := get(t, src.store, id, src.store.hidden.Load())
		got, gok := get(t, dst.store, id, nil)
		if wok != gok || (wok && want.Vector[0] != got.Vector[0]) {
			t.Fatalf("%s: source %v %v, destination %v %v", id, wok, want.Vector, gok, got.Vector)
		}
	}
}
