package router

import (
	"context"
	"maps"
	"testing"

	"github.com/annshard/annshard/shardserver/balance"
	"github.com/annshard/annshard/shardserver/client"
)

// TestSearchReadsYourWrites: a replica that has not yet applied a write acknowledged
// through the router must not hide it; the search is answered by the primary instead.
func TestSearchReadsYourWrites(t *testing.T) {
	cl := newCluster(t, 1, 2, Config{Policy: balance.RoundRobin})
	cl.load(20, nil)
	primary, replica := cl.shards[0][0], cl.shards[0][1]

	freeze(replica, primary)

	ctx := context.Background()
	if del, err := cl.c.Delete(ctx, "v3", ""); err != nil || !del.Deleted {
		t.Fatalf("delete v3: %+v, %v", del, err)
	}
	before := replica.searches.Load()
	for i := range 6 {
		resp, err := cl.c.Search(ctx, &client.SearchRequest{Vector: vec(3), K: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Results) != 1 || resp.Results[0].ID == "v3" {
			t.Fatalf("search %d after deleting v3 returned %+v", i, resp.Results)
		}
	}
	if replica.searches.Load() == before {
		t.Fatal("the lagging replica was never asked; the test proves nothing")
	}
}

// TestGetReadsYourWrites: the same for get by id, whose answers carry the replica's seq in
// a header: a lagging replica's stale vector or stale not_found is replaced by the primary's.
func TestGetReadsYourWrites(t *testing.T) {
	cl := newCluster(t, 1, 2, Config{Policy: balance.RoundRobin})
	cl.load(20, nil)
	primary, replica := cl.shards[0][0], cl.shards[0][1]
	freeze(replica, primary)

	ctx := context.Background()
	if _, err := cl.c.Delete(ctx, "v3", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: "new", Vector: vec(99)}}}); err != nil {
		t.Fatal(err)
	}
	before := replica.gets.Load()
	for i := range 6 {
		if v, err := cl.c.Get(ctx, "v3", ""); !client.IsCode(err, client.CodeNotFound) {
			t.Fatalf("get %d of deleted v3: %+v, %v", i, v, err)
		}
		if v, err := cl.c.Get(ctx, "new", ""); err != nil || v.ID != "new" {
			t.Fatalf("get %d of new: %+v, %v", i, v, err)
		}
	}
	if replica.gets.Load() == before {
		t.Fatal("the lagging replica was never asked; the test proves nothing")
	}
}

// TestReadsYourWritesWithAMisnamedPrimary: the router takes a lagging replica for the
// primary (its writes are redirected to the real one by not_primary). A fresh answer must
// still be found, among the other replicas.
func TestReadsYourWritesWithAMisnamedPrimary(t *testing.T) {
	cl := newCluster(t, 1, 2, Config{Policy: balance.RoundRobin})
	cl.load(20, nil)
	misnamed, real := cl.shards[0][0], cl.shards[0][1]
	freeze(misnamed, real)
	misnamed.writeErr.Store(func() *client.APIError {
		return &client.APIError{Code: client.CodeNotPrimary, Message: "read replica", Primary: real.url()}
	})

	ctx := context.Background()
	if del, err := cl.c.Delete(ctx, "v3", ""); err != nil || !del.Deleted {
		t.Fatalf("delete v3: %+v, %v", del, err)
	}
	for i := range 6 {
		resp, err := cl.c.Search(ctx, &client.SearchRequest{Vector: vec(3), K: 1})
		if err != nil || len(resp.Results) != 1 || resp.Results[0].ID == "v3" {
			t.Fatalf("search %d after deleting v3: %+v, %v", i, resp, err)
		}
		if v, err := cl.c.Get(ctx, "v3", ""); !client.IsCode(err, client.CodeNotFound) {
			t.Fatalf("get %d of deleted v3: %+v, %v", i, v, err)
		}
	}
}

// freeze makes f stop replicating: from now on it serves a copy of from's data as of now.
// Call it before any request is in flight to f.
func freeze(f, from *fakeShard) {
	stale := newFakeStore()
	from.mu.Lock()
	maps.Copy(stale.vecs, from.vecs)
	stale.seq = from.seq
	from.mu.Unlock()
	f.fakeStore = stale
}
