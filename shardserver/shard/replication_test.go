package shard

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/client"
)

// TestReplicationInProcess runs a primary and a replica in this process (so the race
// detector sees both sides) under concurrent writes, searches and snapshots, then checks
// the replica holds exactly what the primary holds.
func TestReplicationInProcess(t *testing.T) {
	pcfg := testConfig(t.TempDir())
	pcfg.Token = "tok"
	pcfg.SegmentBytes = 4096
	primary, phs := newTestServer(t, pcfg)
	rcfg := testConfig(t.TempDir())
	rcfg.Token, rcfg.Primary = "tok", phs.URL
	replica, rhs := newTestServer(t, rcfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { replica.repl.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	c := client.New(phs.URL, client.WithToken("tok"))
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for i := range 30 {
				var err error
				if i%7 == 6 {
					_, err = c.DeleteBatch(ctx, &client.DeleteRequest{IDs: []string{fmt.Sprintf("w%d-%d", w, r.IntN(20))}})
				} else {
					_, err = c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{
						{ID: fmt.Sprintf("w%d-%d", w, r.IntN(20)), Vector: randVec(r, testDim), Partition: fmt.Sprint(w % 2)}}})
				}
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := client.New(rhs.URL).Search(ctx, &client.SearchRequest{Vector: randVec(r, testDim), K: 3, Partition: "1"}); err != nil {
					t.Error(err)
					return
				}
				if i%10 == 0 {
					if err := primary.store.Snapshot(); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	want := primary.store.Applied()
	deadline := time.Now().Add(10 * time.Second)
	for replica.store.Applied() != want || !replica.ready() {
		if time.Now().After(deadline) {
			t.Fatalf("replica at %d (ready %v), primary at %d: %s", replica.store.Applied(), replica.ready(), want, replica.repl.status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !reflect.DeepEqual(contents(replica.store), contents(primary.store)) {
		t.Fatal("replica contents differ from the primary's")
	}
	if code, _ := do(t, http.MethodGet, rhs.URL+"/readyz", "", nil); code != http.StatusOK {
		t.Fatalf("caught-up replica /readyz = %d", code)
	}

	// A replica whose next record was trimmed away bootstraps from the snapshot.
	cancel()
	<-done
	if _, err := c.Upsert(context.Background(), &client.UpsertRequest{Vectors: []client.Vector{{ID: "late", Vector: make([]float32, testDim)}}}); err != nil {
		t.Fatal(err)
	}
	for range 3 { // snapshots trim the segments before the previous snapshot
		for i := range 20 {
			if _, err := c.Upsert(context.Background(), &client.UpsertRequest{Vectors: []client.Vector{{ID: fmt.Sprint("fill", i), Vector: randVec(rand.New(rand.NewPCG(1, uint64(i))), testDim)}}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := primary.store.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	if first := primary.store.Log().FirstSeq(); first <= replica.store.Applied()+1 {
		t.Fatalf("the primary's log still starts at %d; the test needs it trimmed past %d", first, replica.store.Applied()+1)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() { replica.repl.run(ctx2); close(done2) }()
	defer func() { cancel2(); <-done2 }()
	want = primary.store.Applied()
	for replica.store.Applied() != want {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("replica did not re-bootstrap: at %d, primary at %d: %s", replica.store.Applied(), want, replica.repl.status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !reflect.DeepEqual(contents(replica.store), contents(primary.store)) {
		t.Fatal("re-bootstrapped replica differs from the primary")
	}
}

// TestReplicaStaysReadyThroughAPrimaryRestart: a caught-up replica that loses its primary
// stays ready for PrimaryLossGrace (reads survive a primary restart), then is not ready.
func TestReplicaStaysReadyThroughAPrimaryRestart(t *testing.T) {
	for _, tt := range []struct {
		name      string
		grace     time.Duration
		wantReady bool
	}{
		{"within the grace", time.Hour, true},
		{"no grace", 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pcfg := testConfig(t.TempDir())
			pcfg.Token = "tok"
			primary, phs := newTestServer(t, pcfg)
			rcfg := testConfig(t.TempDir())
			rcfg.Token, rcfg.Primary, rcfg.PrimaryLossGrace = "tok", phs.URL, tt.grace
			replica, _ := newTestServer(t, rcfg)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { replica.repl.run(ctx); close(done) }()
			defer func() { cancel(); <-done }()

			c := client.New(phs.URL, client.WithToken("tok"))
			r := rand.New(rand.NewPCG(1, 2))
			if _, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: "a", Vector: randVec(r, testDim)}}}); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for replica.store.Applied() != primary.store.Applied() || !replica.ready() {
				if time.Now().After(deadline) {
					t.Fatalf("replica never caught up: %s", replica.repl.status())
				}
				time.Sleep(10 * time.Millisecond)
			}
			phs.CloseClientConnections()
			phs.Close() // the primary goes away
			deadline = time.Now().Add(10 * time.Second)
			for replica.repl.live.Load() {
				if time.Now().After(deadline) {
					t.Fatal("the replica did not notice its primary was gone")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if got := replica.ready(); got != tt.wantReady {
				t.Fatalf("ready after losing the primary = %v, want %v (%s)", got, tt.wantReady, replica.repl.status())
			}
		})
	}
}

// TestReplicaRebootstrapsOnNewHistory: a primary whose data directory was wiped and
// refilled to the same length has other records under the same sequence numbers; its
// replica must notice (the history id differs) and bootstrap again, not keep following.
func TestReplicaRebootstrapsOnNewHistory(t *testing.T) {
	ctx := context.Background()
	newPrimary := func() (*Server, *client.Client, string) {
		cfg := testConfig(t.TempDir())
		cfg.Token = "tok"
		p, hs := newTestServer(t, cfg)
		return p, client.New(hs.URL, client.WithToken("tok")), hs.URL
	}
	fill := func(c *client.Client, seed uint64) {
		r := rand.New(rand.NewPCG(seed, 1))
		for i := range 8 {
			if _, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: fmt.Sprint("id", i), Vector: randVec(r, testDim)}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	p1, c1, url1 := newPrimary()
	fill(c1, 1)
	rcfg := testConfig(t.TempDir())
	rcfg.Token, rcfg.Primary = "tok", url1
	replica, _ := newTestServer(t, rcfg)
	follow := func(p *Server) {
		t.Helper()
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { replica.repl.run(runCtx); close(done) }()
		defer func() { cancel(); <-done }()
		deadline := time.Now().Add(20 * time.Second)
		for replica.store.Applied() != p.store.Applied() || replica.store.History() != p.store.History() ||
			!reflect.DeepEqual(contents(replica.store), contents(p.store)) {
			if time.Now().After(deadline) {
				t.Fatalf("replica at seq %d (history %s), primary at %d (history %s): %s", replica.store.Applied(),
					replica.store.History(), p.store.Applied(), p.store.History(), replica.repl.status())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	follow(p1)

	// The wiped primary: same address in real life, same length, other vectors.
	p2, c2, url2 := newPrimary()
	fill(c2, 2)
	if p2.store.Applied() != p1.store.Applied() {
		t.Fatalf("the test needs equal lengths: %d and %d", p2.store.Applied(), p1.store.Applied())
	}
	replica.repl.setPrimary(url2)
	follow(p2)
	// And it keeps following the new history.
	fill(c2, 3)
	follow(p2)
}
