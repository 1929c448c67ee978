package router

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/client"
)

// endpointsOf returns the endpoints of a cluster's fake shards, with the named pods
// marked draining.
func (cl *cluster) endpointsOf(draining ...string) map[int][]Endpoint {
	out := map[int][]Endpoint{}
	for k, reps := range cl.shards {
		for i, f := range reps {
			name := fmt.Sprintf("s%d-%d", k, i)
			out[k] = append(out[k], Endpoint{URL: f.url(), Ordinal: i, Name: name, Draining: slices.Contains(draining, name)})
		}
	}
	return out
}

// endpointStatus finds pod in a router status.
func endpointStatus(st client.RouterStatus, pod string) (client.RouterEndpoint, bool) {
	for _, sh := range st.Shards {
		for _, ep := range sh.Endpoints {
			if ep.Pod == pod {
				return ep, true
			}
		}
	}
	return client.RouterEndpoint{}, false
}

func (cl *cluster) search(ctx context.Context, q []float32) error {
	_, err := cl.c.Search(ctx, &client.SearchRequest{Vector: q, K: 3})
	return err
}

func TestDrainingReplicaGetsNoReads(t *testing.T) {
	cl := newCluster(t, 1, 3, Config{})
	cl.load(20, nil)
	cl.r.SetEndpoints(cl.endpointsOf("s0-2"))
	before := cl.shards[0][2].searches.Load()
	for i := range 60 {
		if err := cl.search(context.Background(), vec(i)); err != nil {
			t.Fatalf("search %d: %v", i, err)
		}
	}
	if got := cl.shards[0][2].searches.Load(); got != before {
		t.Fatalf("the draining replica got %d searches", got-before)
	}
	if cl.shards[0][1].searches.Load() == 0 {
		t.Fatal("the other replica got no searches: the test proves nothing")
	}
	st := cl.r.Status()
	if st.Epoch != 1 || len(st.Shards) != 1 || len(st.Shards[0].Endpoints) != 3 {
		t.Fatalf("status %+v, want epoch 1 and one shard of 3 endpoints", st)
	}
	for _, ep := range st.Shards[0].Endpoints {
		want := client.RouterEndpoint{Pod: ep.Pod, Ordinal: ep.Ordinal, Draining: ep.Pod == "s0-2"}
		if ep != want {
			t.Fatalf("endpoint %+v, want %+v", ep, want)
		}
	}

	step := "writes still go to a primary marked draining"
	cl.r.SetEndpoints(cl.endpointsOf("s0-0"))
	if _, err := cl.c.Upsert(context.Background(), &client.UpsertRequest{Vectors: []client.Vector{{ID: "w", Vector: vec(99)}}}); err != nil {
		t.Fatalf("%s: %v", step, err)
	}
}

// TestStatusCountsOpenRequests: a search open to a replica when it is marked draining is
// reported until it is answered.
func TestStatusCountsOpenRequests(t *testing.T) {
	cl := newCluster(t, 1, 2, Config{})
	cl.load(10, nil)
	for _, f := range cl.shards[0] {
		f.delay.Store(int64(400 * time.Millisecond))
	}
	done := make(chan error, 1)
	go func() { done <- cl.search(context.Background(), vec(1)) }()

	var busy string
	deadline := time.Now().Add(5 * time.Second)
	for busy == "" && time.Now().Before(deadline) {
		for _, ep := range cl.r.Status().Shards[0].Endpoints {
			if ep.InFlight > 0 {
				busy = ep.Pod
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if busy == "" {
		t.Fatal("no replica ever reported the open search")
	}
	cl.r.SetEndpoints(cl.endpointsOf(busy))
	ep, ok := endpointStatus(cl.r.Status(), busy)
	// The search counts twice here, as a request open to the replica and as a read on
	// the view it started on: InFlight is an upper bound, exact only at 0.
	if !ok || !ep.Draining || ep.InFlight < 1 {
		t.Fatalf("%s while its search is open: %+v (listed %v), want draining with requests in flight", busy, ep, ok)
	}
	if err := <-done; err != nil {
		t.Fatalf("search: %v", err)
	}
	if ep, _ := endpointStatus(cl.r.Status(), busy); !ep.Draining || ep.InFlight != 0 {
		t.Fatalf("%s after its search was answered: %+v, want draining with 0 in flight", busy, ep)
	}

	step := "a pod that left the view is listed while a request to it is open"
	go func() { done <- cl.search(context.Background(), vec(2)) }()
	var open string
	for open == "" && time.Now().Before(deadline.Add(5*time.Second)) {
		for _, ep := range cl.r.Status().Shards[0].Endpoints {
			if ep.InFlight > 0 {
				open = ep.Pod
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	eps := cl.endpointsOf()
	eps[0] = nil
	cl.r.SetEndpoints(eps)
	if ep, ok := endpointStatus(cl.r.Status(), open); !ok || !ep.Draining || ep.InFlight < 1 {
		t.Fatalf("%s: %s after it left the view: %+v (listed %v)", step, open, ep, ok)
	}
	<-done
	if _, ok := endpointStatus(cl.r.Status(), open); ok {
		t.Fatalf("%s: %s still listed once its request was answered", step, open)
	}
}

// TestStatusCountsReadsOnReplacedViews: a read that took the view before the drain mark
// may still choose the draining replica, so it counts until it ends.
func TestStatusCountsReadsOnReplacedViews(t *testing.T) {
	cl := newCluster(t, 1, 2, Config{})
	v, unpin := cl.r.pinView()
	if v.shard(0) == nil || len(v.shard(0).replicas) != 2 {
		t.Fatal("pinned view has not both replicas")
	}
	cl.r.SetEndpoints(cl.endpointsOf("s0-1"))
	if ep, _ := endpointStatus(cl.r.Status(), "s0-1"); !ep.Draining || ep.InFlight != 1 {
		t.Fatalf("s0-1 with a read on the old view: %+v, want draining with 1 in flight", ep)
	}
	unpin()
	if ep, _ := endpointStatus(cl.r.Status(), "s0-1"); !ep.Draining || ep.InFlight != 0 {
		t.Fatalf("s0-1 once the read ended: %+v, want draining with 0 in flight", ep)
	}
	cl.r.SetEndpoints(cl.endpointsOf("s0-1")) // a rebuild forgets views no read uses
	cl.r.mu.Lock()
	retired := len(cl.r.retired)
	cl.r.mu.Unlock()
	if retired != 0 {
		t.Fatalf("%d replaced views kept after their reads ended", retired)
	}
}

// TestDrainingOnlyReplicasStillServe: with every ready replica of a shard draining, the
// router keeps reading from them rather than failing, and says it still chooses them.
func TestDrainingOnlyReplicasStillServe(t *testing.T) {
	cl := newCluster(t, 2, 2, Config{})
	cl.load(20, nil)
	cl.r.SetEndpoints(cl.endpointsOf("s1-0", "s1-1"))
	for i := range 10 {
		if err := cl.search(context.Background(), vec(i)); err != nil {
			t.Fatalf("search %d: %v", i, err)
		}
	}
	for _, pod := range []string{"s1-0", "s1-1"} {
		if ep, _ := endpointStatus(cl.r.Status(), pod); ep.Draining {
			t.Fatalf("%s reported draining though the router still chooses it", pod)
		}
	}
	if err := cl.r.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
}

func TestRouterStatusEndpoint(t *testing.T) {
	cl := newCluster(t, 2, 1, Config{})
	st, err := cl.c.RouterStatus(context.Background())
	if err != nil {
		t.Fatalf("RouterStatus: %v", err)
	}
	if st.Epoch != 1 || len(st.Shards) != 2 || st.Shards[1].Shard != 1 || st.Shards[1].Endpoints[0].Pod != "s1-0" {
		t.Fatalf("status %+v", st)
	}
	anon := client.New(cl.c.BaseURL())
	if _, err := anon.RouterStatus(context.Background()); !client.IsCode(err, client.CodeUnauthorized) {
		t.Fatalf("without the token: %v, want unauthorized", err)
	}
}
