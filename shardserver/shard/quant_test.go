package shard

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/slots"
)

func int8StoreConfig(dir string) StoreConfig {
	c := testStoreConfig(dir)
	c.Index.Quantization, c.Index.Rerank, c.Index.VectorDir = hnsw.Int8, true, dir
	return c
}

// TestInt8Store: an Int8 shard keeps exact vectors (get, slot export), gives exact
// distances, survives deletes and a restart from a snapshot, and a change of the
// setting between restarts keeps every vector.
func TestInt8Store(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(int8StoreConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(11, 12))
	for b := range 6 {
		upsertN(t, s, r, b*40, 60)
		del := []deleteItem{{id: fmt.Sprintf("k%d", b*40), slot: s.SlotOf(fmt.Sprintf("k%d", b*40), "")}}
		if _, _, err := s.Write(context.Background(), record{op: opDelete, deletes: del}); err != nil {
			t.Fatal(err)
		}
		if b == 3 {
			if err := s.Snapshot(); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.waitDrained(t)
	want := contents(s)

	// Exact distances: the best hit of a stored vector is itself, at distance 0, and
	// every distance is the float32 one.
	for id, v := range map[string][]float32{"k5": nil, "k77": nil, "k150": nil} {
		got, ok := get(t, s, id, s.hidden.Load())
		if !ok {
			t.Fatalf("%s missing", id)
		}
		v = got.Vector
		hits, err := s.Search(v, 5, 32, "")
		if err != nil || len(hits) != 5 || hits[0].ID != id || hits[0].Distance != 0 {
			t.Fatalf("search for %s's own vector: %+v, %v", id, hits, err)
		}
		for _, h := range hits {
			hv, _ := get(t, s, h.ID, s.hidden.Load())
			if d := s.dist(v, hv.Vector); d != h.Distance {
				t.Fatalf("hit %s at %v, its float32 distance is %v", h.ID, h.Distance, d)
			}
		}
	}

	// Slot export hands out the exact vectors.
	all := slots.All()
	exported := map[string]string{}
	if err := s.exportSlots(&all, 50, func(items []upsertItem) error {
		for _, it := range items {
			exported[it.id] = fmt.Sprint(it.partition, it.vec)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(exported, want) {
		t.Fatal("exported vectors differ from the stored ones")
	}

	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, q := range []hnsw.Quantization{hnsw.Int8, hnsw.NoQuantization, hnsw.Int8} {
		cfg := int8StoreConfig(dir)
		cfg.Index.Quantization = q
		s2, err := OpenStore(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := contents(s2); !reflect.DeepEqual(got, want) {
			t.Fatalf("reopened as %v: contents differ", q)
		}
		hits, err := s2.Search(randVec(r, testDim), 5, 32, "p")
		if err != nil || len(hits) != 5 {
			t.Fatalf("reopened as %v: partition search %v, %v", q, hits, err)
		}
		if err := s2.Snapshot(); err != nil {
			t.Fatal(err)
		}
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// waitDrained waits until every applied vector is in the graph.
func (s *Store) waitDrained(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.Unindexed() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d vectors still outside the graph", s.Unindexed())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestInt8Replication: a replica of an Int8 primary bootstraps from its snapshot and
// follows its log to the same contents.
func TestInt8Replication(t *testing.T) {
	pcfg := testConfig(t.TempDir())
	pcfg.Quantization, pcfg.Rerank = hnsw.Int8, true
	pcfg.Token = "tok"
	primary, phs := newTestServer(t, pcfg)
	c := client.New(phs.URL, client.WithToken("tok"))
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 4))
	upsert := func(from, n int) {
		var vs []client.Vector
		for i := range n {
			vs = append(vs, client.Vector{ID: fmt.Sprint("v", from+i), Vector: randVec(r, testDim), Partition: fmt.Sprint(i % 2)})
		}
		if _, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: vs}); err != nil {
			t.Fatal(err)
		}
	}
	upsert(0, 40)
	if _, err := c.DeleteBatch(ctx, &client.DeleteRequest{IDs: []string{"v3", "v4"}}); err != nil {
		t.Fatal(err)
	}
	if err := primary.store.Snapshot(); err != nil {
		t.Fatal(err)
	}
	upsert(30, 40) // replaces some, after the snapshot

	rcfg := testConfig(t.TempDir())
	rcfg.Quantization, rcfg.Rerank = hnsw.Int8, true
	rcfg.Token, rcfg.Primary = "tok", phs.URL
	replica, rhs := newTestServer(t, rcfg)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { replica.repl.run(rctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for replica.store.Applied() != primary.store.Applied() {
		if time.Now().After(deadline) {
			t.Fatalf("replica at %d, primary at %d: %s", replica.store.Applied(), primary.store.Applied(), replica.repl.status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !reflect.DeepEqual(contents(replica.store), contents(primary.store)) {
		t.Fatal("replica contents differ from the primary's")
	}
	q := randVec(r, testDim)
	want, err := c.Search(ctx, &client.SearchRequest{Vector: q, K: 5, Partition: "1"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := client.New(rhs.URL).Search(ctx, &client.SearchRequest{Vector: q, K: 5, Partition: "1"})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(res *client.SearchResponse) []string {
		var out []string
		for _, h := range res.Results {
			out = append(out, h.ID)
		}
		return out
	}
	if !slices.Equal(ids(got), ids(want)) {
		t.Fatalf("replica answers %v, primary %v", ids(got), ids(want))
	}
}

// TestInt8GetReadError: when the index cannot read a vector back from its vector file,
// Get and a slot export return the error at once instead of taking the id for absent
// (a moved slot would lose it).
func TestInt8GetReadError(t *testing.T) {
	s, err := OpenStore(int8StoreConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	upsertN(t, s, rand.New(rand.NewPCG(13, 14)), 0, 20)
	s.waitDrained(t)
	if _, ok := get(t, s, "k3", nil); !ok {
		t.Fatal("k3 missing before the failure")
	}
	if err := s.st.idx.Close(); err != nil { // the vector file is gone: reads fail
		t.Fatal(err)
	}
	if v, ok, err := s.Get("k3", ""); err == nil || ok {
		t.Fatalf("Get after the vector file failed: %+v, %v, %v; want an error", v, ok, err)
	}
	if _, ok, err := s.Get("absent", ""); ok || err != nil {
		t.Fatalf("Get of an absent id: %v, %v; want not found", ok, err)
	}
	all := slots.Range(0, slots.Count-1)
	err = s.exportSlots(&all, 8, func([]upsertItem) error { return nil })
	if err == nil {
		t.Fatal("slot export after the vector file failed: no error")
	}
}
