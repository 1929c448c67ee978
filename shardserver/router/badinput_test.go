package router

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/apitest"
	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/shard"
	"github.com/annshard/annshard/shardserver/slots"
	"github.com/annshard/annshard/shardserver/wal"
)

// realShards is a router in front of in-process shard servers (the real handlers,
// stores and WALs), one replica per shard.
type realShards struct {
	shards []*client.Client
	router *httptest.Server
	r      *Router
}

const realDim = 8

var realLimits = shard.Limits{MaxBodyBytes: 1 << 16, MaxBatch: 50, MaxK: 100, MaxEf: 500}

func newRealShards(t *testing.T, n int, metric hnsw.Metric) *realShards {
	t.Helper()
	rs := &realShards{}
	eps := map[int][]Endpoint{}
	for k := range n {
		s, err := shard.New(shard.Config{DataDir: t.TempDir(), Dimension: realDim, Metric: metric, M: 8, EfConstruction: 32,
			EfSearch: 32, Seed: 1, WALSync: wal.SyncInterval, WALSyncInterval: 10 * time.Millisecond, SegmentBytes: 1 << 20,
			Limits: realLimits, SnapshotInterval: time.Hour, SnapshotRecords: 1 << 30, MaxLag: 10, DrainTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx, ln) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("shard %d: %v", k, err)
			}
		})
		url := "http://" + ln.Addr().String()
		eps[k] = []Endpoint{{URL: url, Ordinal: 0, Name: fmt.Sprintf("s%d", k)}}
		rs.shards = append(rs.shards, client.New(url))
	}
	r, err := New(Config{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	r.SetEndpoints(eps)
	r.SetTable(slots.Even(n))
	rs.r = r
	rs.router = httptest.NewServer(r.Handler())
	t.Cleanup(rs.router.Close)
	return rs
}

// state is every shard's WAL sequence and vector count.
func (rs *realShards) state(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for k, c := range rs.shards {
		lr, err := c.Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "shard %d: seq %d, %d vectors; ", k, lr.WALSeq, lr.Vectors)
	}
	return b.String()
}

func send(t *testing.T, method, url, body string) (int, client.APIError) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var eb client.ErrorBody
	if resp.StatusCode/100 != 2 {
		if err := json.Unmarshal(raw, &eb); err != nil {
			t.Fatalf("error body %q: %v", raw, err)
		}
	}
	return resp.StatusCode, eb.Error
}

// TestBadInputThroughRouter sends the shard's bad-input table to a router in front of two
// real shards: each request gets the same status, code and words as from a shard, and
// no shard stores anything. It runs twice: on a router that has not polled a load
// report yet (it fetches the shards' schema itself) and on one that has.
func TestBadInputThroughRouter(t *testing.T) {
	rs := newRealShards(t, 2, hnsw.L2)
	good := apitest.Vector(realDim, 0.5)
	if code, e := send(t, "POST", rs.router.URL+"/v1/vectors", `{"vectors":[{"id":"keep","vector":`+good+`}]}`); code != http.StatusOK {
		t.Fatalf("seed upsert: %d %+v", code, e)
	}
	sc := client.Schema{Dimension: realDim, Metric: "L2", MaxBatch: realLimits.MaxBatch, MaxK: realLimits.MaxK,
		MaxEf: realLimits.MaxEf, MaxBodyBytes: realLimits.MaxBodyBytes}
	for _, polled := range []bool{false, true} {
		if polled {
			rs.r.pollLoad(context.Background())
		} else {
			rs.r.schema.Store(nil)
			rs.r.schemaTried = time.Time{}
		}
		t.Run(fmt.Sprintf("polled=%v", polled), func(t *testing.T) {
			for _, tt := range apitest.BadInput(sc) {
				t.Run(tt.Name, func(t *testing.T) {
					before := rs.state(t)
					code, e := send(t, tt.Method, rs.router.URL+tt.Path, tt.Body)
					if code != tt.Status || e.Code != tt.Code || !strings.Contains(e.Message, tt.Msg) {
						t.Fatalf("got %d %+v, want %d %s with %q", code, e, tt.Status, tt.Code, tt.Msg)
					}
					if after := rs.state(t); after != before {
						t.Fatalf("a refused request changed the shards:\nbefore %s\nafter  %s", before, after)
					}
				})
			}
		})
	}
}

// TestBadBatchStoresNothing: one bad vector in a batch whose items span every shard is
// refused before any part is sent (the shards alone would store the good parts).
func TestBadBatchStoresNothing(t *testing.T) {
	rs := newRealShards(t, 2, hnsw.Cosine)
	tbl := slots.Even(2)
	item := func(id string, vec []float32) client.Vector { return client.Vector{ID: id, Vector: vec} }
	unit := make([]float32, realDim)
	unit[0] = 1
	bad := map[string][]float32{
		"zero vector under Cosine": make([]float32, realDim),
		"over the squared length":  {1e19, 1e19, 0, 0, 0, 0, 0, 0},
	}
	for name, vec := range bad {
		t.Run(name, func(t *testing.T) {
			req := &client.UpsertRequest{}
			onShard := map[int]int{}
			for i := range 20 {
				id := fmt.Sprintf("v%d", i)
				onShard[tbl.ShardOfKey(id)]++
				req.Vectors = append(req.Vectors, item(id, unit))
			}
			if len(onShard) != 2 {
				t.Fatalf("the batch does not span both shards: %v", onShard)
			}
			req.Vectors = append(req.Vectors, item("bad", vec))
			body, _ := json.Marshal(req)
			before := rs.state(t)
			code, e := send(t, "POST", rs.router.URL+"/v1/vectors", string(bytes.Clone(body)))
			if code != http.StatusBadRequest || !strings.Contains(e.Message, "vectors[20].vector") {
				t.Fatalf("got %d %+v, want 400 naming vectors[20].vector", code, e)
			}
			if after := rs.state(t); after != before {
				t.Fatalf("a refused batch was stored in part:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}
