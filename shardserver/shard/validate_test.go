package shard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/hnsw"
)

func vecJSON(dim int, v float32) string {
	parts := make([]string, dim)
	for i := range parts {
		parts[i] = fmt.Sprint(v)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// TestBadInputChangesNothing sends every kind of bad request and checks the status, the
// error code, and that neither the WAL nor the index moved.
func TestBadInputChangesNothing(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s, hs := newTestServer(t, cfg)
	good := vecJSON(testDim, 0.5)
	if code, body := do(t, http.MethodPost, hs.URL+"/v1/vectors", "", `{"vectors":[{"id":"keep","vector":`+good+`}]}`); code != http.StatusOK {
		t.Fatalf("seed upsert = %d %s", code, body)
	}
	inf := make([]float32, testDim)
	inf[3] = float32(math.Inf(1))
	nan := make([]float32, testDim)
	nan[0] = float32(math.NaN())
	many := make([]string, cfg.MaxBatch+1)
	for i := range many {
		many[i] = fmt.Sprintf(`{"id":"m%d","vector":%s}`, i, good)
	}
	ids := make([]string, cfg.MaxBatch+1)
	for i := range ids {
		ids[i] = fmt.Sprintf(`"m%d"`, i)
	}
	queries := make([]string, cfg.MaxBatch+1)
	for i := range queries {
		queries[i] = `{"vector":` + good + `,"k":1}`
	}
	long := strings.Repeat("x", MaxIDBytes+1)
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"malformed json", "POST", "/v1/vectors", `{"vectors":[`, 400, client.CodeInvalidArgument},
		{"not an object", "POST", "/v1/vectors", `[1,2]`, 400, client.CodeInvalidArgument},
		{"two values", "POST", "/v1/vectors", `{"vectors":[{"id":"z","vector":` + good + `}]} {}`, 400, client.CodeInvalidArgument},
		{"unknown field", "POST", "/v1/vectors", `{"vectors":[{"id":"z","vector":` + good + `,"color":1}]}`, 400, client.CodeInvalidArgument},
		{"unknown top field", "POST", "/v1/vectors", `{"vectors":[],"x":1}`, 400, client.CodeInvalidArgument},
		{"empty batch", "POST", "/v1/vectors", `{"vectors":[]}`, 400, client.CodeInvalidArgument},
		{"batch too big", "POST", "/v1/vectors", `{"vectors":[` + strings.Join(many, ",") + `]}`, 400, client.CodeInvalidArgument},
		{"wrong dimension", "POST", "/v1/vectors", `{"vectors":[{"id":"z","vector":[1,2,3]}]}`, 400, client.CodeInvalidArgument},
		{"wrong dimension b64", "POST", "/v1/vectors", `{"vectors":[{"id":"z","vector_b64":"` + client.EncodeB64([]float32{1, 2}) + `"}]}`, 400, client.CodeInvalidArgument},
		{"bad base64", "POST", "/v1/vectors", `{"vectors":[{"id":"z","vector_b64":"@@@"}]}`, 400, client.CodeInvalidArgument},
		{"both forms", "POST", "/v1/vectors", `{"vectors":[{"id":"z","vector":` + good + `,"vector_b64":"` + client.EncodeB64(make([]float32, testDim)) + `"}]}`, 400, client.CodeInvalidArgument},
		{"missing vector", "POST", "/v1/vectors", `{"vectors":[{"id":"z"}]}`, 400, client.CodeInvalidArgument},
		{"infinite", "POST", "/v1/vectors", `{"vectors":[{"id":"z","vector_b64":"` + client.EncodeB64(inf) + `"}]}`, 400, client.CodeInvalidArgument},
		{"nan", "POST", "/v1/vectors", `{"vectors":[{"id":"z","vector_b64":"` + client.EncodeB64(nan) + `"}]}`, 400, client.CodeInvalidArgument},
		{"float32 overflow", "POST", "/v1/vectors", `{"vectors":[{"id":"z","vector":[1e39,0,0,0,0,0,0,0]}]}`, 400, client.CodeInvalidArgument},
		{"string component", "POST", "/v1/vectors", `{"vectors":[{"id":"z","vector":["a",0,0,0,0,0,0,0]}]}`, 400, client.CodeInvalidArgument},
		{"empty id", "POST", "/v1/vectors", `{"vectors":[{"id":"","vector":` + good + `}]}`, 400, client.CodeInvalidArgument},
		{"long id", "POST", "/v1/vectors", `{"vectors":[{"id":"` + long + `","vector":` + good + `}]}`, 400, client.CodeInvalidArgument},
		{"long partition", "POST", "/v1/vectors", `{"vectors":[{"id":"z","partition":"` + long + `","vector":` + good + `}]}`, 400, client.CodeInvalidArgument},
		{"duplicate id", "POST", "/v1/vectors", `{"vectors":[{"id":"z","vector":` + good + `},{"id":"z","vector":` + good + `}]}`, 400, client.CodeInvalidArgument},
		{"one bad in batch", "POST", "/v1/vectors", `{"vectors":[{"id":"ok1","vector":` + good + `},{"id":"bad","vector":[1]}]}`, 400, client.CodeInvalidArgument},
		{"body over limit", "POST", "/v1/vectors", `{"vectors":[{"id":"` + strings.Repeat("y", int(cfg.MaxBodyBytes)) + `"}]}`, 413, client.CodePayloadTooLarge},
		{"delete empty", "POST", "/v1/vectors:delete", `{"ids":[]}`, 400, client.CodeInvalidArgument},
		{"delete empty id", "POST", "/v1/vectors:delete", `{"ids":["keep",""]}`, 400, client.CodeInvalidArgument},
		{"delete long id", "POST", "/v1/vectors:delete", `{"ids":["keep","` + long + `"]}`, 400, client.CodeInvalidArgument},
		{"delete too many", "POST", "/v1/vectors:delete", `{"ids":[` + strings.Join(ids, ",") + `]}`, 400, client.CodeInvalidArgument},
		{"delete unknown field", "POST", "/v1/vectors:delete", `{"ids":["keep"],"all":true}`, 400, client.CodeInvalidArgument},
		{"delete one long id", "DELETE", "/v1/vectors/" + long, ``, 400, client.CodeInvalidArgument},
		{"search k 0", "POST", "/v1/search", `{"vector":` + good + `,"k":0}`, 400, client.CodeInvalidArgument},
		{"search k over", "POST", "/v1/search", `{"vector":` + good + `,"k":101}`, 400, client.CodeInvalidArgument},
		{"search k negative", "POST", "/v1/search", `{"vector":` + good + `,"k":-1}`, 400, client.CodeInvalidArgument},
		{"search ef over", "POST", "/v1/search", `{"vector":` + good + `,"k":1,"ef":501}`, 400, client.CodeInvalidArgument},
		{"search ef negative", "POST", "/v1/search", `{"vector":` + good + `,"k":1,"ef":-5}`, 400, client.CodeInvalidArgument},
		{"search wrong dimension", "POST", "/v1/search", `{"vector":[1,2],"k":1}`, 400, client.CodeInvalidArgument},
		{"search nan", "POST", "/v1/search", `{"vector_b64":"` + client.EncodeB64(nan) + `","k":1}`, 400, client.CodeInvalidArgument},
		{"search unknown field", "POST", "/v1/search", `{"vector":` + good + `,"k":1,"topk":3}`, 400, client.CodeInvalidArgument},
		{"search malformed", "POST", "/v1/search", `{"vector":`, 400, client.CodeInvalidArgument},
		{"batch search empty", "POST", "/v1/search:batch", `{"queries":[]}`, 400, client.CodeInvalidArgument},
		{"batch search too many", "POST", "/v1/search:batch", `{"queries":[` + strings.Join(queries, ",") + `]}`, 400, client.CodeInvalidArgument},
		{"batch search one bad", "POST", "/v1/search:batch", `{"queries":[{"vector":` + good + `,"k":1},{"vector":` + good + `,"k":0}]}`, 400, client.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq, n := s.store.Applied(), s.store.Len()
			code, body := do(t, tt.method, hs.URL+tt.path, "", tt.body)
			if code != tt.status {
				t.Fatalf("status %d, want %d: %s", code, tt.status, body)
			}
			if e := errCode(t, body); e.Code != tt.code || e.Message == "" {
				t.Fatalf("error %+v, want code %s", e, tt.code)
			}
			if s.store.Applied() != seq || s.store.Len() != n || s.store.Log().LastSeq() != seq {
				t.Fatalf("rejected request changed the shard: seq %d->%d, vectors %d->%d", seq, s.store.Applied(), n, s.store.Len())
			}
		})
	}
	if v, ok := s.store.Get("keep", ""); !ok || v.Vector[0] != 0.5 {
		t.Fatal("the seed vector is gone")
	}
}

func TestCosineRejectsZeroVector(t *testing.T) {
	sc := schema{dim: 2, metric: hnsw.Cosine, lim: Limits{MaxBatch: 10, MaxK: 10, MaxEf: 10}}
	if _, err := sc.decodeUpsert(strings.NewReader(`{"vectors":[{"id":"a","vector":[0,0]}]}`)); err == nil {
		t.Fatal("zero vector accepted under Cosine")
	}
	sc.metric = hnsw.L2
	if _, err := sc.decodeUpsert(strings.NewReader(`{"vectors":[{"id":"a","vector":[0,0]}]}`)); err != nil {
		t.Fatalf("zero vector refused under L2: %v", err)
	}
}

var fuzzSchema = schema{dim: 4, metric: hnsw.L2, lim: Limits{MaxBodyBytes: 1 << 16, MaxBatch: 8, MaxK: 16, MaxEf: 64}}

// checkItem is what every accepted vector must satisfy.
func checkItem(t *testing.T, vec []float32) {
	if len(vec) != fuzzSchema.dim {
		t.Fatalf("accepted vector of dimension %d", len(vec))
	}
	for _, f := range vec {
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			t.Fatalf("accepted non-finite component %v", f)
		}
	}
}

func FuzzDecodeUpsert(f *testing.F) {
	for _, seed := range []string{
		`{"vectors":[{"id":"a","vector":[1,2,3,4]}]}`,
		`{"vectors":[{"id":"a","vector":[1,2,3,4],"partition":"p"},{"id":"b","vector_b64":"` + client.EncodeB64([]float32{1, 2, 3, 4}) + `"}]}`,
		`{"vectors":[{"id":"a","vector":[1,2,3]}]}`,
		`{"vectors":[{"id":"","vector":[1,2,3,4]}]}`,
		`{"vectors":[]}`, `{}`, `[]`, `null`, `{"vectors":null}`, `{"vectors":[{"id":"a","vector":[1e39,0,0,0]}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		items, err := fuzzSchema.decodeUpsert(bytes.NewReader(data))
		if err != nil {
			if _, ok := err.(*client.APIError); !ok {
				t.Fatalf("error %T is not an *APIError: %v", err, err)
			}
			return
		}
		if len(items) == 0 || len(items) > fuzzSchema.lim.MaxBatch {
			t.Fatalf("accepted a batch of %d", len(items))
		}
		seen := map[string]bool{}
		for _, it := range items {
			if it.id == "" || len(it.id) > MaxIDBytes || len(it.partition) > MaxIDBytes || seen[it.id] {
				t.Fatalf("accepted bad id %q / partition %q", it.id, it.partition)
			}
			seen[it.id] = true
			checkItem(t, it.vec)
		}
		// What was accepted must survive the WAL encoding unchanged.
		rec, err := decodeRecord(encodeUpsert(fuzzSchema.dim, items))
		if err != nil || len(rec.upserts) != len(items) {
			t.Fatalf("record round trip: %v", err)
		}
		for i, it := range rec.upserts {
			if it.id != items[i].id || it.partition != items[i].partition || it.slot != items[i].slot {
				t.Fatalf("record round trip changed item %d", i)
			}
		}
	})
}

func FuzzDecodeSearch(f *testing.F) {
	for _, seed := range []string{
		`{"vector":[1,2,3,4],"k":3}`,
		`{"vector":[1,2,3,4],"k":3,"ef":32,"partition":"p","allowPartial":true}`,
		`{"vector_b64":"` + client.EncodeB64([]float32{1, 2, 3, 4}) + `","k":1}`,
		`{"vector":[1,2,3,4],"k":0}`, `{"vector":[1,2,3,4],"k":17}`, `{"k":1}`, `{`, ``,
		` { "vector" : [ -0.5 , 1e-3 , 2E+2 , 0 ] , "k" : 2 , "allowPartial" : false } `,
		`{"K":1,"vector":[1,2,3,4]}`, `{"k":1,"k":2,"vector":[1,2,3,4]}`, `{"k":1.0,"vector":[1,2,3,4]}`,
		`{"vector":[01,2,3,4],"k":1}`, `{"vector":[1,2,3,4],"k":1,"partition":"a\"b"}`, `{"vector":[1,2,3,4],"k":1}x`,
		`{"vector":null,"k":1}`, `{"vector":[],"k":1}`, `{"vector":[1e39],"k":1}`, `{"vector":[1,2,3,4],"k":1,"partition":"ÿ"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Where the fast parser answers, encoding/json must agree with it exactly.
		if fast, ok := fastSearch(data); ok {
			var slow client.SearchRequest
			if err := decodeJSON(bytes.NewReader(data), &slow); err != nil {
				t.Fatalf("fast parser accepted what encoding/json refuses (%v): %q", err, data)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("fast %+v != encoding/json %+v for %q", fast, slow, data)
			}
		}
		// The batch parser must agree too, on the same object wrapped in a batch.
		wrapped := append(append([]byte(`{"queries":[`), data...), "]}"...)
		if fast, ok := fastBatch(wrapped); ok {
			var slow client.BatchSearchRequest
			if err := decodeJSON(bytes.NewReader(wrapped), &slow); err != nil {
				t.Fatalf("fast batch parser accepted what encoding/json refuses (%v): %q", err, wrapped)
			}
			if !reflect.DeepEqual(fast, slow.Queries) {
				t.Fatalf("fast batch %+v != encoding/json %+v for %q", fast, slow.Queries, wrapped)
			}
		}
		q, err := fuzzSchema.decodeSearch(bytes.NewReader(data))
		if err != nil {
			if _, ok := err.(*client.APIError); !ok {
				t.Fatalf("error %T is not an *APIError: %v", err, err)
			}
			return
		}
		if q.k < 1 || q.k > fuzzSchema.lim.MaxK || q.ef < 0 || q.ef > fuzzSchema.lim.MaxEf || len(q.partition) > MaxIDBytes {
			t.Fatalf("accepted query %+v", q)
		}
		checkItem(t, q.vec)
	})
}

func FuzzSearchResponse(f *testing.F) {
	f.Add("a1", "acme", float32(0.25), uint64(3))
	f.Add("quote\"back\\slash\n", "", float32(-1e-30), uint64(0))
	f.Add("\xff\u2028<&>", "p\x00", float32(3.4e38), uint64(1<<63))
	f.Fuzz(func(t *testing.T, id, part string, dist float32, seq uint64) {
		if dist != dist || dist > math.MaxFloat32 || dist < -math.MaxFloat32 {
			dist = 0 // the index never returns NaN; Inf is clamped, checked below
		}
		hits := []client.Hit{{ID: id, Distance: dist, Partition: part}, {ID: part, Distance: 1}}
		var fastBatch, slowBatch client.BatchSearchResponse
		bb := appendBatchResponse(nil, [][]client.Hit{hits, {}, hits[:1]}, seq)
		wantBatch, _ := json.Marshal(client.BatchSearchResponse{Results: [][]client.Hit{hits, {}, hits[:1]}, Seq: seq})
		if err := json.Unmarshal(bb, &fastBatch); err != nil {
			t.Fatalf("invalid JSON %q: %v", bb, err)
		}
		_ = json.Unmarshal(wantBatch, &slowBatch)
		if !reflect.DeepEqual(fastBatch, slowBatch) {
			t.Fatalf("fast batch encoding decodes to %+v, encoding/json's to %+v", fastBatch, slowBatch)
		}
		b := appendSearchResponse(nil, hits, seq)
		var fast, slow client.SearchResponse
		if err := json.Unmarshal(b, &fast); err != nil {
			t.Fatalf("invalid JSON %q: %v", b, err)
		}
		want, _ := json.Marshal(client.SearchResponse{Results: hits, Seq: seq})
		if err := json.Unmarshal(want, &slow); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("fast encoding decodes to %+v, encoding/json's to %+v", fast, slow)
		}
	})
}

func TestSearchResponseClampsInfinity(t *testing.T) {
	b := appendSearchResponse(nil, []client.Hit{{ID: "x", Distance: float32(math.Inf(1))}}, 0)
	var r client.SearchResponse
	if err := json.Unmarshal(b, &r); err != nil || r.Results[0].Distance != math.MaxFloat32 {
		t.Fatalf("%s: %+v, %v", b, r, err)
	}
}
