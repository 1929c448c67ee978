package router

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/balance"
	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

func TestWritesGoToTheOwningPrimary(t *testing.T) {
	cl := newCluster(t, 3, 2, Config{})
	vs := cl.load(60, func(i int) string {
		if i%3 == 0 {
			return "tenant-a"
		}
		return ""
	})
	tab := slots.Even(3)
	for k, reps := range cl.shards {
		var want []string
		for _, v := range vs {
			if tab.ShardOfKey(slots.KeyOf(v.ID, v.Partition)) == k {
				want = append(want, v.ID)
			}
		}
		slices.Sort(want)
		if got := reps[0].ids(); !slices.Equal(got, want) {
			t.Errorf("shard %d holds %v, want %v", k, got, want)
		}
		if n := reps[1].writes.Load(); n != 0 {
			t.Errorf("shard %d: replica got %d writes; writes belong to the primary", k, n)
		}
		if n := reps[0].writes.Load(); n > 1 {
			t.Errorf("shard %d: primary got %d writes for one batch", k, n)
		}
		if tok := reps[0].gotToken.Load().(string); reps[0].writes.Load() > 0 && tok != "Bearer "+testToken {
			t.Errorf("shard %d: write carried %q, want the router's token", k, tok)
		}
	}
}

func TestSearchMergesAndRoutes(t *testing.T) {
	cl := newCluster(t, 3, 2, Config{})
	vs := cl.load(90, func(i int) string {
		if i%2 == 0 {
			return "even"
		}
		return ""
	})
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		q         int
		k         int
		partition string
		b64       bool
	}{
		{"fan out", 1000, 10, "", false},
		{"fan out b64", 1001, 5, "", true},
		{"k above one shard's count", 1002, 80, "", false},
		{"partition", 1003, 7, "even", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &client.SearchRequest{K: tc.k, Partition: tc.partition}
			if tc.b64 {
				req.VectorB64 = client.EncodeB64(vec(tc.q))
			} else {
				req.Vector = vec(tc.q)
			}
			before := make([]int64, len(cl.shards))
			for k := range cl.shards {
				before[k] = cl.shards[k][0].searches.Load() + cl.shards[k][1].searches.Load()
			}
			resp, err := cl.c.Search(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			want := bruteTopK(vs, vec(tc.q), tc.k, tc.partition)
			if got := idsOf(resp.Results); !slices.Equal(got, want) {
				t.Fatalf("ids %v\nwant %v", got, want)
			}
			if resp.Partial || len(resp.MissingShards) > 0 {
				t.Fatalf("partial answer %+v", resp)
			}
			asked := 0
			for k := range cl.shards {
				if cl.shards[k][0].searches.Load()+cl.shards[k][1].searches.Load() > before[k] {
					asked++
				}
			}
			wantAsked := 3
			if tc.partition != "" {
				wantAsked = 1
			}
			if asked != wantAsked {
				t.Fatalf("%d shards asked, want %d", asked, wantAsked)
			}
		})
	}
}

func TestMergeTopK(t *testing.T) {
	h := func(id string, d float32) client.Hit { return client.Hit{ID: id, Distance: d} }
	for _, tc := range []struct {
		name  string
		lists [][]client.Hit
		k     int
		want  []string
	}{
		{"interleave", [][]client.Hit{{h("a", 1), h("c", 3)}, {h("b", 2), h("d", 4)}}, 3, []string{"a", "b", "c"}},
		{"dedupe keeps nearest", [][]client.Hit{{h("a", 5), h("b", 6)}, {h("a", 1)}}, 3, []string{"a", "b"}},
		{"ties by id", [][]client.Hit{{h("z", 1)}, {h("y", 1)}, {h("x", 1)}}, 2, []string{"x", "y"}},
		{"fewer than k", [][]client.Hit{{h("a", 1)}, nil}, 10, []string{"a"}},
		{"nothing", nil, 3, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mergeTopK(tc.lists, tc.k)
			if !slices.Equal(idsOf(got), tc.want) {
				t.Fatalf("got %v, want %v", idsOf(got), tc.want)
			}
			if tc.name == "dedupe keeps nearest" && got[0].Distance != 1 {
				t.Fatalf("kept distance %v, want the nearest (1)", got[0].Distance)
			}
		})
	}
}

func TestPartialAnswers(t *testing.T) {
	cl := newCluster(t, 3, 2, Config{})
	cl.load(30, nil)
	for _, f := range cl.shards[1] {
		f.failCode.Store(client.CodeInternal)
	}
	ctx := context.Background()
	_, err := cl.c.Search(ctx, &client.SearchRequest{Vector: vec(1), K: 5})
	if errCode(err) != client.CodeUnavailable || !strings.Contains(err.Error(), "shard 1") {
		t.Fatalf("without allowPartial: err %v, want unavailable naming shard 1", err)
	}
	var ae *client.APIError
	if e, ok := err.(*client.APIError); ok {
		ae = e
	}
	if ae == nil || ae.HTTPStatus != http.StatusServiceUnavailable {
		t.Fatalf("status of %v, want 503", err)
	}
	resp, err := cl.c.Search(ctx, &client.SearchRequest{Vector: vec(1), K: 5, AllowPartial: true})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Partial || !slices.Equal(resp.MissingShards, []int{1}) || len(resp.Results) != 5 {
		t.Fatalf("allowPartial answer %+v, want partial naming shard 1 with 5 results", resp)
	}
}

func TestReadRetriesAnotherReplica(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failCode string
		delay    time.Duration
	}{
		{"error", client.CodeInternal, 0},
		{"unavailable", client.CodeUnavailable, 0},
		{"timeout", "", 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := newCluster(t, 1, 2, Config{Policy: balance.RoundRobin, Timeout: time.Second})
			cl.load(10, nil)
			bad := cl.shards[0][0]
			bad.failCode.Store(tc.failCode)
			bad.delay.Store(int64(tc.delay))
			for i := range 4 { // round-robin: half of them start on the bad replica
				if _, err := cl.c.Search(context.Background(), &client.SearchRequest{Vector: vec(i), K: 3}); err != nil {
					t.Fatalf("search %d: %v", i, err)
				}
			}
			if got := counter(t, cl, "annshard_router_retries_total"); got < 1 {
				t.Fatalf("retries = %v, want >= 1", got)
			}
			if bad.searches.Load() == 0 {
				t.Fatal("bad replica never asked: the test proves nothing")
			}
		})
	}
}

func TestCallerErrorsAreNotRetried(t *testing.T) {
	cl := newCluster(t, 2, 2, Config{})
	for _, f := range cl.shards[0] {
		f.failCode.Store(client.CodeInvalidArgument)
	}
	_, err := cl.c.Search(context.Background(), &client.SearchRequest{Vector: vec(1), K: 3})
	if errCode(err) != client.CodeInvalidArgument {
		t.Fatalf("err %v, want invalid_argument passed through", err)
	}
	if got := cl.shards[0][0].searches.Load() + cl.shards[0][1].searches.Load(); got != 1 {
		t.Fatalf("shard 0 asked %d times, want 1", got)
	}
}

// TestHedgingCancelsTheLoser also runs with micro-batching on (the router's default): a
// lone search is its own batch, so a losing hedge cancels it there too.
func TestHedgingCancelsTheLoser(t *testing.T) {
	for _, batchMax := range []int{0, 16} {
		t.Run(fmt.Sprintf("batch-max=%d", batchMax), func(t *testing.T) {
			testHedgingCancelsTheLoser(t, batchMax)
		})
	}
}

func testHedgingCancelsTheLoser(t *testing.T, batchMax int) {
	cl := newCluster(t, 1, 2, Config{Policy: balance.RoundRobin, HedgePercentile: 50, Timeout: 5 * time.Second, BatchMax: batchMax})
	cl.load(10, nil)
	ctx := context.Background()
	// Learn the healthy latency: enough samples for the percentile.
	for i := range 2 * minSamples {
		if _, err := cl.c.Search(ctx, &client.SearchRequest{Vector: vec(i), K: 3}); err != nil {
			t.Fatal(err)
		}
	}
	if cl.r.view.Load().shard(0).lat.hedgeAfter() <= 0 {
		t.Fatal("no hedging threshold after the warm-up")
	}
	slow := cl.shards[0][0]
	slow.delay.Store(int64(3 * time.Second))
	for i := range 4 {
		start := time.Now()
		if _, err := cl.c.Search(ctx, &client.SearchRequest{Vector: vec(i), K: 3}); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("search %d took %v: the hedge did not win", i, d)
		}
	}
	if got := counter(t, cl, "annshard_router_hedged_requests_total"); got < 1 {
		t.Fatalf("hedges = %v, want >= 1", got)
	}
	// The slow replica sees its request's context end once the hedge wins.
	deadline := time.Now().Add(2 * time.Second)
	for slow.cancelled.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if slow.cancelled.Load() == 0 {
		t.Fatal("the losing request was not cancelled")
	}
}

func TestCacheIsInvalidatedByWrites(t *testing.T) {
	cl := newCluster(t, 2, 1, Config{CacheEntries: 100})
	cl.load(20, nil)
	ctx := context.Background()
	q := &client.SearchRequest{Vector: vec(500), K: 3}
	searches := func() int64 { return cl.shards[0][0].searches.Load() + cl.shards[1][0].searches.Load() }

	first, err := cl.c.Search(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	n := searches()
	again, err := cl.c.Search(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if searches() != n || !slices.Equal(idsOf(again.Results), idsOf(first.Results)) {
		t.Fatalf("second identical search reached the shards (or changed): %d -> %d", n, searches())
	}
	if counter(t, cl, "annshard_router_cache_hits_total") != 1 {
		t.Fatal("cache hit not counted")
	}
	// A different k is a different query.
	if _, err := cl.c.Search(ctx, &client.SearchRequest{Vector: vec(500), K: 4}); err != nil {
		t.Fatal(err)
	}
	if searches() == n {
		t.Fatal("k=4 served from the k=3 entry")
	}
	for _, tc := range []struct {
		name  string
		write func() error
		want  func(ids []string) bool
	}{
		{"upsert of the query itself", func() error {
			_, err := cl.c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: "exact", Vector: vec(500)}}})
			return err
		}, func(ids []string) bool { return len(ids) > 0 && ids[0] == "exact" }},
		{"delete of it", func() error {
			_, err := cl.c.Delete(ctx, "exact", "")
			return err
		}, func(ids []string) bool { return !slices.Contains(ids, "exact") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.write(); err != nil {
				t.Fatal(err)
			}
			n := searches()
			resp, err := cl.c.Search(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if searches() == n {
				t.Fatal("search after a write was served from the cache")
			}
			if !tc.want(idsOf(resp.Results)) {
				t.Fatalf("stale answer after the write: %v", idsOf(resp.Results))
			}
		})
	}
}

func TestCacheLRU(t *testing.T) {
	c := newResultCache(2)
	c.put("a", []client.Hit{{ID: "1"}})
	c.put("b", []client.Hit{{ID: "2"}})
	c.get("a") // a is now the most recent
	c.put("c", []client.Hit{{ID: "3"}})
	for _, tc := range []struct {
		key string
		hit bool
	}{{"a", true}, {"b", false}, {"c", true}} {
		if _, ok := c.get(tc.key); ok != tc.hit {
			t.Errorf("get(%q) hit = %v, want %v", tc.key, ok, tc.hit)
		}
	}
	if c.len() != 2 {
		t.Fatalf("len %d, want 2", c.len())
	}
	var off *resultCache = newResultCache(0)
	off.put("x", nil)
	if _, ok := off.get("x"); ok {
		t.Fatal("disabled cache returned a hit")
	}
}

func TestSearchKeyDistinguishes(t *testing.T) {
	base := func() (vec []float32, req client.SearchRequest, epoch uint64, targets []int, seqs []uint64) {
		return []float32{1, 2}, client.SearchRequest{K: 10, Ef: 64, Partition: "p"}, 3, []int{0}, []uint64{5}
	}
	v, req, e, tg, sq := base()
	ref := searchKey(v, &req, e, tg, sq)
	for _, tc := range []struct {
		name string
		mut  func(v *[]float32, req *client.SearchRequest, e *uint64, sq []uint64)
	}{
		{"vector", func(v *[]float32, _ *client.SearchRequest, _ *uint64, _ []uint64) { *v = []float32{1, 2.0000002} }},
		{"k", func(_ *[]float32, r *client.SearchRequest, _ *uint64, _ []uint64) { r.K = 11 }},
		{"ef", func(_ *[]float32, r *client.SearchRequest, _ *uint64, _ []uint64) { r.Ef = 65 }},
		{"partition", func(_ *[]float32, r *client.SearchRequest, _ *uint64, _ []uint64) { r.Partition = "q" }},
		{"epoch", func(_ *[]float32, _ *client.SearchRequest, e *uint64, _ []uint64) { *e = 4 }},
		{"seq", func(_ *[]float32, _ *client.SearchRequest, _ *uint64, s []uint64) { s[0] = 6 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, req, e, tg, sq := base()
			tc.mut(&v, &req, &e, sq)
			if searchKey(v, &req, e, tg, sq) == ref {
				t.Fatalf("changing the %s keeps the cache key", tc.name)
			}
		})
	}
}

// writeRoutingFile writes t atomically (temp file and rename, as kubelet swaps).
func writeRoutingFile(t *testing.T, path string, tab slots.Table) {
	t.Helper()
	b, err := tab.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestMovedRefreshesTheTable(t *testing.T) {
	cl := newCluster(t, 2, 1, Config{})
	path := filepath.Join(t.TempDir(), "routing.json")
	one := slots.Table{Epoch: 5, Shards: 2} // every slot on shard 0
	writeRoutingFile(t, path, one)
	fw, err := newFileWatcher(path, cl.r)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fw.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if cl.r.view.Load().epoch() != 5 {
		t.Fatalf("epoch %d after loading the file, want 5", cl.r.view.Load().epoch())
	}

	// The operator moved every slot to shard 1; shard 0 already refuses them.
	moved := one
	moved.Move(slots.All(), 1)
	writeRoutingFile(t, path, moved)
	cl.shards[0][0].writeErr.Store(func() *client.APIError {
		return &client.APIError{Code: client.CodeMoved, Message: "slots moved", Epoch: moved.Epoch}
	})
	resp, err := cl.c.Upsert(context.Background(), &client.UpsertRequest{Vectors: []client.Vector{{ID: "m1", Vector: vec(1)}}})
	if err != nil {
		t.Fatalf("upsert across a move: %v", err)
	}
	if resp.Upserted != 1 || !slices.Equal(cl.shards[1][0].ids(), []string{"m1"}) || len(cl.shards[0][0].ids()) != 0 {
		t.Fatalf("after moved: answer %+v, shard 0 %v, shard 1 %v", resp, cl.shards[0][0].ids(), cl.shards[1][0].ids())
	}
	if got := cl.r.view.Load().epoch(); got != moved.Epoch {
		t.Fatalf("epoch %d, want %d", got, moved.Epoch)
	}
	// An older table never rolls routing back.
	cl.r.SetTable(one)
	if got := cl.r.view.Load().epoch(); got != moved.Epoch {
		t.Fatalf("older table installed: epoch %d", got)
	}
}

func TestNotPrimaryRedirects(t *testing.T) {
	cl := newCluster(t, 1, 2, Config{})
	// The endpoint list still calls replica 0 the primary; it was demoted.
	real := cl.shards[0][1]
	cl.shards[0][0].writeErr.Store(func() *client.APIError {
		return &client.APIError{Code: client.CodeNotPrimary, Message: "read replica", Primary: real.url()}
	})
	resp, err := cl.c.Upsert(context.Background(), &client.UpsertRequest{Vectors: []client.Vector{{ID: "x", Vector: vec(1)}}})
	if err != nil || resp.Upserted != 1 {
		t.Fatalf("upsert: %+v, %v", resp, err)
	}
	if real.writes.Load() != 1 {
		t.Fatalf("the named primary got %d writes, want 1", real.writes.Load())
	}
}

func TestWriteRetryBudget(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      *client.APIError
		wantCode string
		wantTry  int64
	}{
		{"unavailable exhausts the budget", &client.APIError{Code: client.CodeUnavailable, Message: "restarting"}, client.CodeUnavailable, 3},
		{"invalid input is not retried", &client.APIError{Code: client.CodeInvalidArgument, Message: "bad dimension"}, client.CodeInvalidArgument, 1},
		// A frozen slot: the write waits for the handover until its deadline, not for a
		// number of attempts (-1: more than the budget).
		{"moved without a newer table", &client.APIError{Code: client.CodeMoved, Message: "moved"}, client.CodeUnavailable, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := newCluster(t, 1, 1, Config{WriteAttempts: 3})
			cl.shards[0][0].writeErr.Store(func() *client.APIError { return tc.err })
			_, err := cl.c.Upsert(context.Background(), &client.UpsertRequest{Vectors: []client.Vector{{ID: "x", Vector: vec(1)}}})
			if errCode(err) != tc.wantCode {
				t.Fatalf("err %v, want code %s", err, tc.wantCode)
			}
			if tc.wantCode == client.CodeUnavailable && !strings.Contains(err.Error(), "shard 0") {
				t.Fatalf("err %v does not name the shard", err)
			}
			if got := cl.shards[0][0].writes.Load(); got != tc.wantTry && (tc.wantTry != -1 || got <= 3) {
				t.Fatalf("%d attempts, want %d", got, tc.wantTry)
			}
		})
	}
}

func TestGetAndDeleteWithoutPartitionAskEveryShard(t *testing.T) {
	cl := newCluster(t, 3, 1, Config{})
	vs := cl.load(12, func(i int) string { return fmt.Sprintf("p%d", i%4) })
	ctx := context.Background()
	for _, v := range vs[:4] {
		got, err := cl.c.Get(ctx, v.ID, "")
		if err != nil || got.ID != v.ID || got.Partition != v.Partition {
			t.Fatalf("get %s without partition: %+v, %v", v.ID, got, err)
		}
		got, err = cl.c.Get(ctx, v.ID, v.Partition)
		if err != nil || got.ID != v.ID {
			t.Fatalf("get %s with partition: %+v, %v", v.ID, got, err)
		}
	}
	if _, err := cl.c.Get(ctx, "nope", ""); errCode(err) != client.CodeNotFound {
		t.Fatalf("get of a missing id: %v, want not_found", err)
	}
	del, err := cl.c.Delete(ctx, vs[0].ID, "")
	if err != nil || !del.Deleted {
		t.Fatalf("delete without partition: %+v, %v", del, err)
	}
	batch, err := cl.c.DeleteBatch(ctx, &client.DeleteRequest{IDs: []string{vs[1].ID, vs[2].ID, "nope"}})
	if err != nil || batch.Deleted != 2 {
		t.Fatalf("batch delete: %+v, %v", batch, err)
	}
	batch, err = cl.c.DeleteBatch(ctx, &client.DeleteRequest{IDs: []string{vs[3].ID}, Partition: vs[3].Partition})
	if err != nil || batch.Deleted != 1 {
		t.Fatalf("batch delete with partition: %+v, %v", batch, err)
	}
	even := slots.Even(3)
	owner := even.ShardOfKey(vs[3].Partition)
	for k := range cl.shards {
		if k != owner && cl.shards[k][0].writes.Load() > 4 {
			t.Errorf("shard %d got the partitioned delete", k)
		}
	}
	total := 0
	for k := range cl.shards {
		total += len(cl.shards[k][0].ids())
	}
	if total != 8 {
		t.Fatalf("%d vectors left, want 8", total)
	}
}

func TestEveryPolicyServes(t *testing.T) {
	for _, p := range balance.Policies {
		t.Run(string(p), func(t *testing.T) {
			cl := newCluster(t, 2, 3, Config{Policy: p})
			cl.run()
			vs := cl.load(40, nil)
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Go(func() {
					for i := range 30 {
						q := 100 + g*30 + i
						resp, err := cl.c.Search(context.Background(), &client.SearchRequest{Vector: vec(q), K: 4})
						if err != nil {
							t.Errorf("search: %v", err)
							return
						}
						if want := bruteTopK(vs, vec(q), 4, ""); !slices.Equal(idsOf(resp.Results), want) {
							t.Errorf("got %v want %v", idsOf(resp.Results), want)
						}
					}
				})
			}
			wg.Wait()
			for k := range cl.shards {
				used := 0
				for _, f := range cl.shards[k] {
					if f.searches.Load() > 0 {
						used++
					}
				}
				if used < 2 {
					t.Errorf("%s: shard %d spread its reads over %d replicas", p, k, used)
				}
			}
			if got := counter(t, cl, "annshard_router_replica_selections_total"); got < 240 {
				t.Errorf("selections counted %v, want >= 240", got)
			}
		})
	}
}

func TestMicroBatching(t *testing.T) {
	cl := newCluster(t, 1, 1, Config{BatchMax: 8, BatchWait: 20 * time.Millisecond})
	vs := cl.load(30, nil)
	f := cl.shards[0][0]
	// One search at a time: nothing is outstanding, so each goes alone at once.
	for i := range 3 {
		if _, err := cl.c.Search(context.Background(), &client.SearchRequest{Vector: vec(i), K: 3}); err != nil {
			t.Fatal(err)
		}
	}
	if f.batches.Load() != 0 || f.searches.Load() != 3 {
		t.Fatalf("sequential searches: %d batches, %d searches; want 0 and 3", f.batches.Load(), f.searches.Load())
	}
	// Concurrent searches behind a slow one are batched.
	f.delay.Store(int64(30 * time.Millisecond))
	f.searches.Store(0)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			resp, err := cl.c.Search(context.Background(), &client.SearchRequest{Vector: vec(200 + i), K: 3})
			if err != nil {
				t.Errorf("search: %v", err)
				return
			}
			if want := bruteTopK(vs, vec(200+i), 3, ""); !slices.Equal(idsOf(resp.Results), want) {
				t.Errorf("query %d: got %v want %v", i, idsOf(resp.Results), want)
			}
		})
	}
	wg.Wait()
	if f.batches.Load() == 0 || f.batches.Load()+f.searches.Load() >= 16 {
		t.Fatalf("16 concurrent searches became %d batches and %d single searches", f.batches.Load(), f.searches.Load())
	}

	// A query the shard refuses (k over its limit) fails alone, not its batch mates. Which
	// query leads a batch is up to the scheduler: repeat until the bad one was batched.
	for round := 0; f.refusedBatches.Load() == 0; round++ {
		if round == 20 {
			t.Fatal("the bad query never joined a batch: the case was not exercised")
		}
		errs := make([]error, 8)
		for i := range errs {
			wg.Go(func() {
				k := 3
				if i == 5 {
					k = 500 // within the router's limit, over the shard's
				}
				_, errs[i] = cl.c.Search(context.Background(), &client.SearchRequest{Vector: vec(300 + i), K: k})
			})
		}
		wg.Wait()
		for i, err := range errs {
			if i == 5 && errCode(err) != client.CodeInvalidArgument {
				t.Errorf("bad query: %v, want invalid_argument", err)
			}
			if i != 5 && err != nil {
				t.Errorf("query %d failed with its batch mate: %v", i, err)
			}
		}
	}
}

func TestBatchSearchEndpoint(t *testing.T) {
	cl := newCluster(t, 2, 1, Config{})
	vs := cl.load(30, nil)
	req := &client.BatchSearchRequest{}
	for i := range 5 {
		req.Queries = append(req.Queries, client.SearchRequest{Vector: vec(300 + i), K: 2})
	}
	resp, err := cl.c.BatchSearch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	for i, hits := range resp.Results {
		if want := bruteTopK(vs, vec(300+i), 2, ""); !slices.Equal(idsOf(hits), want) {
			t.Errorf("query %d: got %v want %v", i, idsOf(hits), want)
		}
	}
	req.Queries[3].K = 0
	if _, err := cl.c.BatchSearch(context.Background(), req); errCode(err) != client.CodeInvalidArgument || !strings.Contains(err.Error(), "queries[3].k") {
		t.Fatalf("bad query in a batch: %v", err)
	}
}

func TestHTTPErrorsAndProbes(t *testing.T) {
	cl := newCluster(t, 2, 1, Config{})
	base := cl.c.BaseURL()
	ctx := context.Background()
	noToken := client.New(base)
	wrongToken := client.New(base, client.WithToken("nope"))
	for _, tc := range []struct {
		name string
		call func() error
		code string
	}{
		{"unknown field", func() error {
			return cl.c.Do(ctx, http.MethodPost, "/v1/search", map[string]any{"vector": []float32{1}, "k": 1, "kk": 2}, nil)
		}, client.CodeInvalidArgument},
		{"k zero", func() error {
			_, err := cl.c.Search(ctx, &client.SearchRequest{Vector: vec(1)})
			return err
		}, client.CodeInvalidArgument},
		{"no vector", func() error {
			_, err := cl.c.Search(ctx, &client.SearchRequest{K: 3})
			return err
		}, client.CodeInvalidArgument},
		{"bad base64", func() error {
			_, err := cl.c.Search(ctx, &client.SearchRequest{VectorB64: "###", K: 3})
			return err
		}, client.CodeInvalidArgument},
		{"write without token", func() error {
			_, err := noToken.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: "a", Vector: vec(1)}}})
			return err
		}, client.CodeUnauthorized},
		{"delete with a wrong token", func() error {
			_, err := wrongToken.Delete(ctx, "a", "")
			return err
		}, client.CodeUnauthorized},
		{"empty upsert", func() error {
			_, err := cl.c.Upsert(ctx, &client.UpsertRequest{})
			return err
		}, client.CodeInvalidArgument},
		{"empty id", func() error {
			_, err := cl.c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{Vector: vec(1)}}})
			return err
		}, client.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); errCode(err) != tc.code {
				t.Fatalf("err %v, want code %s", err, tc.code)
			}
		})
	}
	if err := noToken.Health(ctx); err != nil {
		t.Errorf("healthz: %v", err)
	}
	if err := noToken.Ready(ctx); err != nil {
		t.Errorf("readyz with every shard served: %v", err)
	}
	if _, err := noToken.Search(ctx, &client.SearchRequest{Vector: vec(1), K: 1}); err != nil {
		t.Errorf("search needs no token: %v", err)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 1<<16)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	for _, want := range []string{"annshard_router_requests_total", `annshard_router_replica_selections_total{policy="Adaptive",replica="s0-0",shard="0"}`, "annshard_router_request_duration_seconds_bucket"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestReadiness(t *testing.T) {
	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Ready() == nil {
		t.Fatal("ready without a table")
	}
	r.SetTable(slots.Even(2))
	if err := r.Ready(); err == nil || !strings.Contains(err.Error(), "[0 1]") {
		t.Fatalf("ready without replicas: %v", err)
	}
	r.SetEndpoints(map[int][]Endpoint{0: {{URL: "http://127.0.0.1:1", Name: "a"}}})
	if err := r.Ready(); err == nil || !strings.Contains(err.Error(), "[1]") {
		t.Fatalf("ready with shard 1 missing: %v", err)
	}
	r.SetEndpoints(map[int][]Endpoint{0: {{URL: "http://127.0.0.1:1", Name: "a"}}, 1: {{URL: "http://127.0.0.1:2", Name: "b"}}})
	if err := r.Ready(); err != nil {
		t.Fatalf("not ready with every shard known: %v", err)
	}
	// A replica whose load poll fails stops counting.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.pollLoad(ctx)
	if err := r.Ready(); err == nil {
		t.Fatal("ready although no replica answers its load poll")
	}
}

func TestBalancerSurvivesTableUpdates(t *testing.T) {
	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	eps := map[int][]Endpoint{0: {{URL: "http://127.0.0.1:1", Name: "a"}}}
	r.SetEndpoints(eps)
	r.SetTable(slots.Even(1))
	before := r.view.Load().shard(0)
	next := slots.Even(1)
	next.Epoch = 2
	r.SetTable(next)
	r.SetEndpoints(map[int][]Endpoint{0: {{URL: "http://127.0.0.1:1", Name: "a"}}})
	if r.view.Load().shard(0) != before {
		t.Fatal("shard set rebuilt although its endpoints did not change")
	}
	r.SetEndpoints(map[int][]Endpoint{0: {{URL: "http://127.0.0.1:1", Name: "a"}, {URL: "http://127.0.0.1:2", Ordinal: 1, Name: "b"}}})
	if r.view.Load().shard(0) == before {
		t.Fatal("shard set kept although a replica joined")
	}
}

// The write token also passes in client.TokenHeader, as it must through the Kubernetes
// API server's proxy (which removes the Authorization header); a wrong one there fails.
func TestWriteTokenInHeader(t *testing.T) {
	cl := newCluster(t, 1, 1, Config{})
	ctx := context.Background()
	upsert := func(token string) error {
		req := &client.UpsertRequest{Vectors: []client.Vector{{ID: "h", Vector: vec(1)}}}
		hc := &http.Client{Transport: headerTransport{client.TokenHeader, token}}
		_, err := client.New(cl.c.BaseURL(), client.WithHTTPClient(hc)).Upsert(ctx, req)
		return err
	}
	if err := upsert(testToken); err != nil {
		t.Fatalf("token in %s: %v", client.TokenHeader, err)
	}
	if err := upsert("nope"); errCode(err) != client.CodeUnauthorized {
		t.Fatalf("wrong token in %s: %v, want unauthorized", client.TokenHeader, err)
	}
}

type headerTransport struct{ name, value string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.name, h.value)
	return http.DefaultTransport.RoundTrip(r)
}

// TestWriteWaitsThroughAFreeze: a slot frozen for a move answers moved until the
// handover or its rollback; the write waits (without using up its attempts) and lands
// once the shard takes it again, within the request's deadline.
func TestWriteWaitsThroughAFreeze(t *testing.T) {
	cl := newCluster(t, 1, 1, Config{WriteAttempts: 2, Timeout: 8 * time.Second})
	var frozenUntil atomic.Int64
	frozenUntil.Store(time.Now().Add(3 * time.Second).UnixNano())
	cl.shards[0][0].writeErr.Store(func() *client.APIError {
		if time.Now().UnixNano() < frozenUntil.Load() {
			return &client.APIError{Code: client.CodeMoved, Message: "slot frozen for a move", Epoch: 1}
		}
		return nil
	})
	start := time.Now()
	resp, err := cl.c.Upsert(context.Background(), &client.UpsertRequest{Vectors: []client.Vector{{ID: "f1", Vector: vec(1)}}})
	if err != nil {
		t.Fatalf("upsert through a 3s freeze: %v", err)
	}
	if resp.Upserted != 1 || time.Since(start) < 3*time.Second || time.Since(start) > 5*time.Second {
		t.Fatalf("answer %+v after %v", resp, time.Since(start))
	}
	// A freeze longer than the deadline fails the write as unavailable, in time.
	frozenUntil.Store(time.Now().Add(time.Minute).UnixNano())
	start = time.Now()
	_, err = cl.c.Upsert(context.Background(), &client.UpsertRequest{Vectors: []client.Vector{{ID: "f2", Vector: vec(1)}}})
	if !client.IsCode(err, client.CodeUnavailable) || time.Since(start) > 10*time.Second {
		t.Fatalf("write during a long freeze: %v after %v", err, time.Since(start))
	}
}

// TestReadsFollowTheEpoch: during a move the source and the destination may both hold a
// slot; the router asks at its epoch and keeps each shard's hits for the slots its table
// gives that shard, so the merged answer has the vector once, from its owner.
func TestReadsFollowTheEpoch(t *testing.T) {
	cl := newCluster(t, 2, 1, Config{})
	tab := *cl.r.view.Load().table
	id := "dup-1"
	owner := tab.ShardOfKey(id)
	v := client.Vector{ID: id, Vector: vec(1)}
	for k := range 2 {
		st := cl.shards[k][0].fakeStore
		st.mu.Lock()
		st.vecs[id] = v
		st.mu.Unlock()
	}
	resp, err := cl.c.Search(context.Background(), &client.SearchRequest{Vector: vec(1), K: 5})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, h := range resp.Results {
		if h.ID == id {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("a vector held by both shards answered %d times: %+v", n, resp.Results)
	}
	if got := cl.shards[owner][0].gotEpoch.Load(); got != fmt.Sprint(tab.Epoch) {
		t.Fatalf("shard asked at epoch %q, want %d", got, tab.Epoch)
	}
	// Only the owner answers a get for it.
	st := cl.shards[owner][0].fakeStore
	st.mu.Lock()
	delete(st.vecs, id)
	st.mu.Unlock()
	if _, err := cl.c.Get(context.Background(), id, ""); !client.IsCode(err, client.CodeNotFound) {
		t.Fatalf("get answered from a shard that does not own the slot: %v", err)
	}
}
