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

// pollImport polls a job on c (which may be restarting) until ok or the deadline.
func pollImport(t *testing.T, p *proc, id, what string, ok func(*client.ImportStatus) bool) *client.ImportStatus {
	t.Helper()
	c := client.New(p.url())
	deadline := time.Now().Add(2 * time.Minute)
	var last *client.ImportStatus
	for time.Now().Before(deadline) {
		st, err := c.ImportStatus(context.Background(), id)
		if err == nil {
			last = st
			if ok(st) {
				return st
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.fail("import %s: %s not reached; last status %+v", id, what, last)
	return nil
}

// TestImportSurvivesKills moves half the slots between two real shard processes under
// writes, killing (SIGKILL) the destination mid-copy, the source during the copy (the
// export may have been sent whole by then; the log says), the destination while it
// catches up and the source while the destination follows its WAL. The job resumes each time (from its persisted
// sequence, or with a fresh copy when that is what it was doing), and after the handover
// every acknowledged write is on the shard that owns its slot.
func TestImportSurvivesKills(t *testing.T) {
	needProcesses(t)
	// A source that snapshots (and trims its WAL) often: the WAL holds must keep what
	// the import still needs.
	src := newProc(t, t.TempDir(), "--snapshot-records", "20", "--wal-segment-bytes", "16384", "--max-batch", "1000")
	dst := newProc(t, t.TempDir(), "--max-batch", "1000")
	src.start()
	dst.start()
	sc, dc := client.New(src.url()), client.New(dst.url())
	ctx := context.Background()
	moving := slots.Range(0, 2047)
	if _, err := sc.SetSlots(ctx, &client.SlotsRequest{Slots: slots.All().String(), Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.SetSlots(ctx, &client.SlotsRequest{Slots: "", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	const n = 40000
	r := newRand(11)
	for i := 0; i < n; i += 1000 {
		batch := make([]client.Vector, 0, 1000)
		for j := i; j < i+1000; j++ {
			batch = append(batch, client.Vector{ID: fmt.Sprintf("v-%d", j), Vector: randVec(r, testDim)})
		}
		if _, err := sc.Upsert(ctx, &client.UpsertRequest{Vectors: batch}); err != nil {
			t.Fatal(err)
		}
	}

	// The writer: ids w-0..w-199 on the source, then (after the handover) on their owner.
	// A write that fails other than moved may or may not have landed: its id is not
	// checked until a later write of it is acknowledged.
	var handedOver atomic.Bool
	owner := func(id string) *client.Client {
		if handedOver.Load() && moving.Has(slots.Of(id)) {
			return client.New(dst.url())
		}
		return client.New(src.url())
	}
	var mu sync.Mutex
	acked := map[string]float32{}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var writes, failed atomic.Int64
	wg.Go(func() {
		wr := newRand(12)
		for i := 0; !stop.Load(); i++ {
			id := fmt.Sprintf("w-%d", i%200)
			v := randVec(wr, testDim)
			v[0] = float32(i)
			_, err := owner(id).Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: id, Vector: v}}})
			mu.Lock()
			if err == nil {
				acked[id] = float32(i)
				writes.Add(1)
			} else {
				delete(acked, id)
				failed.Add(1)
			}
			mu.Unlock()
			if err != nil {
				time.Sleep(20 * time.Millisecond)
			}
		}
	})

	if _, err := dc.StartImport(ctx, &client.ImportRequest{ID: "k1", Slots: moving.String(), Source: src.url(), Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	pollImport(t, dst, "k1", "copying", func(s *client.ImportStatus) bool { return s.Phase == client.ImportCopying && s.Copied > 0 })
	dst.kill()
	dst.start()
	st := pollImport(t, dst, "k1", "a second copy", func(s *client.ImportStatus) bool { return s.Copies >= 2 && s.Copied > 0 })
	t.Logf("destination killed mid-copy; resumed with copy %d (%+v)", st.Copies, *st)
	if st.Phase == client.ImportCopying {
		src.kill()
		time.Sleep(200 * time.Millisecond)
		src.start()
		t.Log("source killed in the copy phase")
	} else {
		t.Log("the copy ended before the source could be killed in it")
	}
	st = pollImport(t, dst, "k1", "catching up", func(s *client.ImportStatus) bool { return s.Phase == client.ImportCatchingUp })
	// A third copy means the source died while its export streamed; otherwise the
	// export had been sent whole before the kill.
	t.Logf("catching up after %d copies: %+v", st.Copies, *st)
	time.Sleep(500 * time.Millisecond)
	before := st.Copies
	dst.kill()
	dst.start()
	time.Sleep(500 * time.Millisecond)
	st = pollImport(t, dst, "k1", "catching up after the restart", func(s *client.ImportStatus) bool { return s.Phase == client.ImportCatchingUp })
	t.Logf("destination killed while catching up; resumed at applied seq %d (copies %d, was %d)", st.AppliedSeq, st.Copies, before)
	// The source killed while the destination follows its WAL: the stream breaks, the
	// job reconnects from its applied seq once the source is back.
	applied := st.AppliedSeq
	src.kill()
	time.Sleep(200 * time.Millisecond)
	src.start()
	st = pollImport(t, dst, "k1", "past the source's restart", func(s *client.ImportStatus) bool {
		return s.Phase == client.ImportCatchingUp && s.AppliedSeq > applied && s.Message == ""
	})
	t.Logf("source killed while the destination caught up; applied seq %d -> %d (copies %d)", applied, st.AppliedSeq, st.Copies)

	sc, dc = client.New(src.url()), client.New(dst.url())
	fr, err := sc.FreezeSlots(ctx, &client.SlotsRequest{Slots: moving.String(), Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	pollImport(t, dst, "k1", fmt.Sprintf("applied seq %d", fr.Seq), func(s *client.ImportStatus) bool { return s.AppliedSeq >= fr.Seq })
	if _, err := dc.FinishImport(ctx, "k1", 2); err != nil {
		t.Fatal(err)
	}
	handedOver.Store(true)
	if _, err := sc.SetSlots(ctx, &client.SlotsRequest{Slots: slots.All().Minus(moving).String(), Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d writes acknowledged, %d failed (during kills)", writes.Load(), failed.Load())
	for id, version := range acked {
		v, err := owner(id).Get(ctx, id, "")
		if err != nil || v.Vector[0] != version {
			t.Fatalf("%s: acknowledged version %v, read %+v, %v", id, version, v, err)
		}
	}
	missing := 0
	for i := range n {
		id := fmt.Sprintf("v-%d", i)
		if _, err := owner(id).Get(ctx, id, ""); err != nil {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of the %d loaded vectors are not on their owner after the move", missing, n)
	}
}
