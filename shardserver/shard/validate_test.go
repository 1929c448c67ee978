package shard

import (
	"bytes"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/annshard/annshard/shardserver/apitest"
	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/hnsw"
)

// TestBadInputChangesNothing sends every request of the bad-input table (apitest, which
// the router's tests send too) and checks the status, the error code, that the message
// names the field and the fault, and that neither the WAL nor the index moved.
func TestBadInputChangesNothing(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s, hs := newTestServer(t, cfg)
	good := apitest.Vector(testDim, 0.5)
	if code, body := do(t, http.MethodPost, hs.URL+"/v1/vectors", "", `{"vectors":[{"id":"keep","vector":`+good+`}]}`); code != http.StatusOK {
		t.Fatalf("seed upsert = %d %s", code, body)
	}
	for _, tt := range apitest.BadInput(s.schema.Schema) {
		t.Run(tt.Name, func(t *testing.T) {
			seq, n := s.store.Applied(), s.store.Len()
			code, body := do(t, tt.Method, hs.URL+tt.Path, "", tt.Body)
			if code != tt.Status {
				t.Fatalf("status %d, want %d: %s", code, tt.Status, body)
			}
			if e := errCode(t, body); e.Code != tt.Code || !strings.Contains(e.Message, tt.Msg) {
				t.Fatalf("error %+v, want code %s and a message with %q", e, tt.Code, tt.Msg)
			}
			if s.store.Applied() != seq || s.store.Len() != n || s.store.Log().LastSeq() != seq {
				t.Fatalf("rejected request changed the shard: seq %d->%d, vectors %d->%d", seq, s.store.Applied(), n, s.store.Len())
			}
		})
	}
	if v, ok := get(t, s.store, "keep", s.store.hidden.Load()); !ok || v.Vector[0] != 0.5 {
		t.Fatal("the seed vector is gone")
	}
}

func TestCosineRejectsZeroVector(t *testing.T) {
	sc := newSchema(2, hnsw.Cosine, Limits{MaxBatch: 10, MaxK: 10, MaxEf: 10})
	if _, err := sc.decodeUpsert(strings.NewReader(`{"vectors":[{"id":"a","vector":[0,0]}]}`)); err == nil {
		t.Fatal("zero vector accepted under Cosine")
	}
	sc = newSchema(2, hnsw.L2, Limits{MaxBatch: 10, MaxK: 10, MaxEf: 10})
	if _, err := sc.decodeUpsert(strings.NewReader(`{"vectors":[{"id":"a","vector":[0,0]}]}`)); err != nil {
		t.Fatalf("zero vector refused under L2: %v", err)
	}
}

var fuzzSchema = newSchema(4, hnsw.L2, Limits{MaxBodyBytes: 1 << 16, MaxBatch: 8, MaxK: 16, MaxEf: 64})

// checkItem is what every accepted vector must satisfy.
func checkItem(t *testing.T, vec []float32) {
	if len(vec) != fuzzSchema.Dimension {
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
		if len(items) == 0 || len(items) > fuzzSchema.MaxBatch {
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
		rec, err := decodeRecord(encodeUpsert(fuzzSchema.Dimension, items))
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

// FuzzDecodeSearch: a search body is refused with an *APIError or is a valid query.
// client.FuzzDecodeSearch checks that the fast parser agrees with the strict decoder.
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
		q, err := fuzzSchema.decodeSearch(bytes.NewReader(data))
		if err != nil {
			if _, ok := err.(*client.APIError); !ok {
				t.Fatalf("error %T is not an *APIError: %v", err, err)
			}
			return
		}
		if q.k < 1 || q.k > fuzzSchema.MaxK || q.ef < 0 || q.ef > fuzzSchema.MaxEf || len(q.partition) > MaxIDBytes {
			t.Fatalf("accepted query %+v", q)
		}
		checkItem(t, q.vec)
	})
}
