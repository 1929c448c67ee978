package router

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

// BenchmarkServeSearch measures the router's search handler (ServeHTTP, no network on
// the router's side) in front of shards that answer a canned, shard-shaped answer of
// 10 hits: what remains is the router's own work, its HTTP calls to the shards
// included. The shards' handlers cost the same before and after a router change.
func BenchmarkServeSearch(b *testing.B) {
	for _, n := range []int{1, 4} {
		b.Run(fmt.Sprintf("shards=%d", n), func(b *testing.B) {
			r, _ := newCannedRouter(b, n)
			h := r.Handler()
			body := []byte(`{"vector":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8],"k":10}`)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/search", bytes.NewReader(body))
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}

// TestServeSearchAnswer: the search answers the router writes by hand are the JSON
// encoding/json writes of the same answer, but for float formatting.
func TestServeSearchAnswer(t *testing.T) {
	r, srvs := newCannedRouter(t, 4)
	srvs[2].Close() // shard 2 is missing from answers that allow it
	h := r.Handler()
	for _, tt := range []struct{ path, body string }{
		{"/v1/search", `{"vector":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8],"k":10,"allowPartial":true}`},
		{"/v1/search", `{"vector":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8],"k":4,"partition":"p"}`},
		{"/v1/search:batch", `{"queries":[{"vector":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8],"k":3,"allowPartial":true},{"vector_b64":"` +
			client.EncodeB64([]float32{1, 2, 3, 4, 5, 6, 7, 8}) + `","k":12,"ef":20,"allowPartial":true}]}`},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, tt.path, strings.NewReader(tt.body)))
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%s %s: status %d, headers %v: %s", tt.path, tt.body, w.Code, w.Header(), w.Body)
		}
		var want any
		if tt.path == "/v1/search" {
			var in client.SearchRequest
			_ = json.Unmarshal([]byte(tt.body), &in)
			out, err := r.Search(context.Background(), &in)
			if err != nil {
				t.Fatal(err)
			}
			want = out
		} else {
			var in client.BatchSearchRequest
			_ = json.Unmarshal([]byte(tt.body), &in)
			out, err := r.BatchSearch(context.Background(), &in)
			if err != nil {
				t.Fatal(err)
			}
			want = out
		}
		wantJSON, _ := json.Marshal(want)
		var got, exp any
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("%s: %v", w.Body, err)
		}
		_ = json.Unmarshal(wantJSON, &exp)
		if !reflect.DeepEqual(got, exp) || !strings.HasSuffix(w.Body.String(), "}\n") ||
			tt.path == "/v1/search" && !strings.Contains(tt.body, "partition") && !strings.Contains(w.Body.String(), `"missingShards":[2]`) {
			t.Fatalf("%s %s: wrote %s, encoding/json %s", tt.path, tt.body, w.Body, wantJSON)
		}
	}
}

// newCannedRouter is a router in front of n shards that answer every search with a
// canned, shard-shaped answer of 10 hits.
func newCannedRouter(tb testing.TB, n int) (*Router, []*httptest.Server) {
	table := slots.Even(n)
	r, err := New(Config{Seed: 1})
	if err != nil {
		tb.Fatal(err)
	}
	eps := map[int][]Endpoint{}
	var srvs []*httptest.Server
	for k := range n {
		answer := cannedAnswer(table, k)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			_, _ = io.Copy(io.Discard, req.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(answer)
		}))
		tb.Cleanup(srv.Close)
		srvs = append(srvs, srv)
		eps[k] = []Endpoint{{URL: srv.URL, Name: fmt.Sprintf("s%d", k)}}
	}
	r.SetEndpoints(eps)
	r.SetTable(table)
	return r, srvs
}

// cannedAnswer is a shard's answer of 10 hits whose keys the table gives shard k.
func cannedAnswer(table slots.Table, k int) []byte {
	var hits []client.Hit
	for i := 0; len(hits) < 10; i++ {
		id := "v" + strconv.Itoa(i)
		if table.ShardOfKey(slots.KeyOf(id, "")) == k {
			hits = append(hits, client.Hit{ID: id, Distance: float32(len(hits)) / 7})
		}
	}
	b := []byte(`{"results":[`)
	for i, h := range hits {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"id":%q,"distance":%s}`, h.ID, strconv.FormatFloat(float64(h.Distance), 'g', -1, 32))
	}
	return append(b, "],\"partial\":false,\"seq\":3}\n"...)
}
