package shard

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/annshard/annshard/shardserver/client"
)

func TestAPIRoundTrip(t *testing.T) {
	_, hs := newTestServer(t, testConfig(t.TempDir()))
	c := client.New(hs.URL)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	var vecs []client.Vector
	raw := map[string][]float32{}
	for i := range 40 {
		v := client.Vector{ID: "v" + string(rune('a'+i%26)) + strings.Repeat("x", i/26), Vector: randVec(r, testDim)}
		raw[v.ID] = v.Vector
		if i%2 == 1 {
			v.Partition = "odd"
		}
		if i%5 == 0 { // some as base64
			v.VectorB64, v.Vector = client.EncodeB64(v.Vector), nil
		}
		vecs = append(vecs, v)
	}
	up, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: vecs})
	for i := range vecs {
		vecs[i].Vector = raw[vecs[i].ID]
	}
	if err != nil || up.Upserted != 40 || up.Seq != 1 {
		t.Fatalf("Upsert = %+v, %v", up, err)
	}
	t.Run("get", func(t *testing.T) {
		got, err := c.Get(ctx, vecs[1].ID, "")
		if err != nil || got.Partition != "odd" || len(got.Vector) != testDim || got.Vector[0] != vecs[1].Vector[0] {
			t.Fatalf("Get = %+v, %v", got, err)
		}
		if _, err := c.Get(ctx, vecs[1].ID, "even"); !client.IsCode(err, client.CodeNotFound) {
			t.Fatalf("Get in the wrong partition: %v", err)
		}
		// Both answers carry the applied seq, so a router can tell a lagging replica.
		if _, seq, err := c.GetSeq(ctx, vecs[1].ID, ""); err != nil || seq != 1 {
			t.Fatalf("GetSeq = seq %d, %v; want seq 1", seq, err)
		}
		if _, seq, err := c.GetSeq(ctx, "missing", ""); !client.IsCode(err, client.CodeNotFound) || seq != 1 {
			t.Fatalf("GetSeq of a missing id = seq %d, %v; want not_found at seq 1", seq, err)
		}
	})
	t.Run("search finds itself", func(t *testing.T) {
		res, err := c.Search(ctx, &client.SearchRequest{Vector: vecs[3].Vector, K: 3})
		if err != nil || len(res.Results) != 3 || res.Results[0].ID != vecs[3].ID || res.Results[0].Distance != 0 || res.Seq != 1 {
			t.Fatalf("Search = %+v, %v", res, err)
		}
	})
	t.Run("partition filter", func(t *testing.T) {
		res, err := c.Search(ctx, &client.SearchRequest{Vector: vecs[2].Vector, K: 10, Partition: "odd"})
		if err != nil || len(res.Results) != 10 {
			t.Fatalf("Search = %+v, %v", res, err)
		}
		for _, h := range res.Results {
			if h.Partition != "odd" {
				t.Fatalf("hit %+v outside partition odd", h)
			}
		}
		res, err = c.Search(ctx, &client.SearchRequest{Vector: vecs[2].Vector, K: 10, Partition: "nobody"})
		if err != nil || len(res.Results) != 0 {
			t.Fatalf("Search unknown partition = %+v, %v", res, err)
		}
	})
	t.Run("batch search", func(t *testing.T) {
		res, err := c.BatchSearch(ctx, &client.BatchSearchRequest{Queries: []client.SearchRequest{
			{Vector: vecs[0].Vector, K: 1}, {VectorB64: client.EncodeB64(vecs[7].Vector), K: 2}}})
		if err != nil || len(res.Results) != 2 || res.Results[0][0].ID != vecs[0].ID || res.Results[1][0].ID != vecs[7].ID {
			t.Fatalf("BatchSearch = %+v, %v", res, err)
		}
	})
	t.Run("delete", func(t *testing.T) {
		d, err := c.Delete(ctx, vecs[4].ID, "")
		if err != nil || !d.Deleted || d.Seq != 2 {
			t.Fatalf("Delete = %+v, %v", d, err)
		}
		d, err = c.Delete(ctx, vecs[4].ID, "")
		if err != nil || d.Deleted {
			t.Fatalf("second Delete = %+v, %v", d, err)
		}
		db, err := c.DeleteBatch(ctx, &client.DeleteRequest{IDs: []string{vecs[5].ID, vecs[6].ID, "nope"}})
		if err != nil || db.Deleted != 2 {
			t.Fatalf("DeleteBatch = %+v, %v", db, err)
		}
		db, err = c.DeleteBatch(ctx, &client.DeleteRequest{IDs: []string{vecs[8].ID}, Partition: "odd"})
		if err != nil || db.Deleted != 0 {
			t.Fatalf("DeleteBatch in the wrong partition = %+v, %v", db, err)
		}
		if _, err := c.Get(ctx, vecs[5].ID, ""); !client.IsCode(err, client.CodeNotFound) {
			t.Fatalf("Get deleted: %v", err)
		}
		res, err := c.Search(ctx, &client.SearchRequest{Vector: vecs[4].Vector, K: 40})
		if err != nil || len(res.Results) != 37 {
			t.Fatalf("Search after deletes: %d results, %v", len(res.Results), err)
		}
		for _, h := range res.Results {
			if h.ID == vecs[4].ID {
				t.Fatal("deleted vector found")
			}
		}
	})
	t.Run("ids with path characters", func(t *testing.T) {
		for _, id := range []string{"a/b", "sp ace?x=1#frag", "%2F", "ünï"} {
			if _, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: id, Vector: randVec(r, testDim)}}}); err != nil {
				t.Fatal(err)
			}
			got, err := c.Get(ctx, id, "")
			if err != nil || got.ID != id {
				t.Fatalf("Get(%q) = %+v, %v", id, got, err)
			}
			if d, err := c.Delete(ctx, id, ""); err != nil || !d.Deleted {
				t.Fatalf("Delete(%q) = %+v, %v", id, d, err)
			}
		}
	})
	t.Run("upsert replaces", func(t *testing.T) {
		nv := randVec(r, testDim)
		if _, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: vecs[0].ID, Vector: nv, Partition: "p2"}}}); err != nil {
			t.Fatal(err)
		}
		got, err := c.Get(ctx, vecs[0].ID, "")
		if err != nil || got.Vector[0] != nv[0] || got.Partition != "p2" {
			t.Fatalf("Get after replace = %+v, %v", got, err)
		}
	})
	t.Run("load", func(t *testing.T) {
		rep, err := c.Load(ctx)
		if err != nil || rep.Vectors != 37 || rep.WALSeq != 14 || rep.Role != client.RolePrimary || !rep.Ready ||
			len(rep.SlotWrites) == 0 || len(rep.SlotQueries) == 0 || rep.MemoryBytes <= 0 {
			t.Fatalf("Load = %+v, %v", rep, err)
		}
		// A router's poll leaves the per-slot counters out and keeps the rest.
		sum, err := c.LoadSummary(ctx)
		if err != nil || sum.SlotWrites != nil || sum.SlotQueries != nil || sum.Vectors != rep.Vectors ||
			sum.WALSeq != rep.WALSeq || sum.Schema == nil || !sum.Ready {
			t.Fatalf("LoadSummary = %+v, %v", sum, err)
		}
		for _, q := range []string{"slots=true", "slots=1"} {
			code, body := do(t, http.MethodGet, hs.URL+"/v1/load?"+q, "", nil)
			var full client.LoadReport
			if err := json.Unmarshal(body, &full); code != http.StatusOK || err != nil || len(full.SlotWrites) == 0 {
				t.Fatalf("/v1/load?%s = %d %s", q, code, body)
			}
		}
		for _, q := range []string{"slots=maybe", "slot=false", "slots=false&slots=true"} {
			if code, body := do(t, http.MethodGet, hs.URL+"/v1/load?"+q, "", nil); code != http.StatusBadRequest ||
				errCode(t, body).Code != client.CodeInvalidArgument {
				t.Fatalf("/v1/load?%s = %d %s", q, code, body)
			}
		}
	})
	t.Run("probes and metrics", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz"} {
			if code, body := do(t, http.MethodGet, hs.URL+path, "", nil); code != http.StatusOK {
				t.Fatalf("%s = %d %s", path, code, body)
			}
		}
		code, body := do(t, http.MethodGet, hs.URL+"/metrics", "", nil)
		for _, want := range []string{"annshard_shard_vectors 37", "annshard_shard_wal_seq 14",
			`annshard_shard_requests_total{code="200",route="upsert"}`, "annshard_shard_request_duration_seconds_bucket"} {
			if code != http.StatusOK || !strings.Contains(string(body), want) {
				t.Fatalf("/metrics lacks %q", want)
			}
		}
		if code, body := do(t, http.MethodGet, hs.URL+"/nope", "", nil); code != http.StatusNotFound || errCode(t, body).Code != client.CodeNotFound {
			t.Fatalf("unknown path = %d %s", code, body)
		}
	})
}

func TestReadyzBeforeStart(t *testing.T) {
	s, hs := newTestServer(t, testConfig(t.TempDir()))
	s.started.Store(false)
	code, body := do(t, http.MethodGet, hs.URL+"/readyz", "", nil)
	if code != http.StatusServiceUnavailable || errCode(t, body).Code != client.CodeUnavailable {
		t.Fatalf("/readyz = %d %s", code, body)
	}
}

func TestWriteToReplicaIsRefused(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Primary = "http://127.0.0.1:1" // never reached: Run is not called
	_, hs := newTestServer(t, cfg)
	code, body := do(t, http.MethodPost, hs.URL+"/v1/vectors", "", `{"vectors":[{"id":"a","vector":[1,2,3,4,5,6,7,8]}]}`)
	e := errCode(t, body)
	if code != http.StatusMisdirectedRequest || e.Code != client.CodeNotPrimary || e.Primary != cfg.Primary {
		t.Fatalf("write to replica = %d %s", code, body)
	}
	var rep client.LoadReport
	_, body = do(t, http.MethodGet, hs.URL+"/v1/load", "", nil)
	if err := json.Unmarshal(body, &rep); err != nil || rep.Role != client.RoleReplica || rep.Ready {
		t.Fatalf("replica load = %+v, %v", rep, err)
	}
	if code, _ := do(t, http.MethodGet, hs.URL+"/readyz", "", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("unconnected replica /readyz = %d", code)
	}
}
