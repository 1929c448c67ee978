package router

import (
	"cmp"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/client"
)

// fakeShard is an in-process stand-in for one shard replica: brute-force search over
// what was upserted, plus knobs to make it slow, fail, or answer moved/not_primary.
type fakeShard struct {
	t   testing.TB
	srv *httptest.Server

	*fakeStore

	delay          atomic.Int64 // ns added to every search
	failCode       atomic.Value // string: answer every search/get with this error code
	writeErr       atomic.Value // func() *client.APIError: answer writes with it when non-nil
	searches       atomic.Int64
	batches        atomic.Int64
	refusedBatches atomic.Int64
	writes         atomic.Int64
	gets           atomic.Int64
	cancelled      atomic.Int64 // searches whose context ended before their delay did
	gotToken       atomic.Value // string: last Authorization header of a write
	gotEpoch       atomic.Value // string: last client.EpochHeader of a search or get
}

// fakeStore is the data of one fake shard, shared by its replicas so that a write to the
// primary is seen by every replica at once.
type fakeStore struct {
	mu   sync.Mutex
	vecs map[string]client.Vector
	seq  uint64
}

func newFakeStore() *fakeStore { return &fakeStore{vecs: map[string]client.Vector{}} }

func newFakeShard(t testing.TB, st *fakeStore) *fakeShard {
	if st == nil {
		st = newFakeStore()
	}
	f := &fakeShard{t: t, fakeStore: st}
	f.failCode.Store("")
	f.writeErr.Store((func() *client.APIError)(nil))
	f.gotToken.Store("")
	f.gotEpoch.Store("")
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/search", f.search)
	mux.HandleFunc("POST /v1/search:batch", f.batch)
	mux.HandleFunc("POST /v1/vectors", f.upsert)
	mux.HandleFunc("POST /v1/vectors:delete", f.deleteBatch)
	mux.HandleFunc("GET /v1/vectors/{id}", f.get)
	mux.HandleFunc("DELETE /v1/vectors/{id}", f.deleteOne)
	mux.HandleFunc("GET /v1/load", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		writeJSON(w, http.StatusOK, client.LoadReport{Ready: true, WALSeq: f.seq, LatencyP50Ms: 0.5})
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeShard) url() string { return f.srv.URL }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, e *client.APIError) {
	writeJSON(w, client.StatusFor(e.Code), client.ErrorBody{Error: *e})
}

func (f *fakeShard) failing(w http.ResponseWriter) bool {
	if code := f.failCode.Load().(string); code != "" {
		writeErr(w, &client.APIError{Code: code, Message: "fake failure"})
		return true
	}
	return false
}

func (f *fakeStore) query(q *client.SearchRequest) ([]client.Hit, uint64) {
	vec := q.Vector
	if q.VectorB64 != "" {
		vec, _ = client.DecodeB64(q.VectorB64, 0)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var hits []client.Hit
	for _, v := range f.vecs {
		if q.Partition != "" && v.Partition != q.Partition {
			continue
		}
		var d float32
		for i := range min(len(v.Vector), len(vec)) {
			x := v.Vector[i] - vec[i]
			d += x * x
		}
		hits = append(hits, client.Hit{ID: v.ID, Distance: d, Partition: v.Partition})
	}
	slices.SortFunc(hits, func(a, b client.Hit) int {
		return cmp.Or(cmp.Compare(a.Distance, b.Distance), strings.Compare(a.ID, b.ID))
	})
	if len(hits) > q.K {
		hits = hits[:q.K]
	}
	if hits == nil {
		hits = []client.Hit{}
	}
	return hits, f.seq
}

func (f *fakeShard) wait(r *http.Request) bool {
	d := time.Duration(f.delay.Load())
	if d <= 0 {
		return true
	}
	select {
	case <-time.After(d):
		return true
	case <-r.Context().Done():
		f.cancelled.Add(1)
		return false
	}
}

func (f *fakeShard) search(w http.ResponseWriter, r *http.Request) {
	f.searches.Add(1)
	f.gotEpoch.Store(r.Header.Get(client.EpochHeader))
	// The body is read first: only then can the server notice the client going away.
	var q client.SearchRequest
	err := json.NewDecoder(r.Body).Decode(&q)
	if !f.wait(r) || f.failing(w) {
		return
	}
	if err != nil || q.K < 1 || q.K > 100 {
		writeErr(w, &client.APIError{Code: client.CodeInvalidArgument, Message: "bad query"})
		return
	}
	hits, seq := f.query(&q)
	writeJSON(w, http.StatusOK, client.SearchResponse{Results: hits, Seq: seq})
}

func (f *fakeShard) batch(w http.ResponseWriter, r *http.Request) {
	f.batches.Add(1)
	var b client.BatchSearchRequest
	err := json.NewDecoder(r.Body).Decode(&b)
	if !f.wait(r) || f.failing(w) {
		return
	}
	if err != nil {
		writeErr(w, &client.APIError{Code: client.CodeInvalidArgument, Message: err.Error()})
		return
	}
	for _, q := range b.Queries {
		if q.K < 1 || q.K > 100 {
			f.refusedBatches.Add(1)
			writeErr(w, &client.APIError{Code: client.CodeInvalidArgument, Message: "k out of range"})
			return
		}
	}
	out := client.BatchSearchResponse{Results: make([][]client.Hit, len(b.Queries))}
	for i := range b.Queries {
		out.Results[i], out.Seq = f.query(&b.Queries[i])
	}
	writeJSON(w, http.StatusOK, out)
}

func (f *fakeShard) writeRefused(w http.ResponseWriter, r *http.Request) bool {
	f.writes.Add(1)
	f.gotToken.Store(r.Header.Get("Authorization"))
	if fn := f.writeErr.Load().(func() *client.APIError); fn != nil {
		if e := fn(); e != nil {
			writeErr(w, e)
			return true
		}
	}
	return false
}

func (f *fakeShard) upsert(w http.ResponseWriter, r *http.Request) {
	if f.writeRefused(w, r) {
		return
	}
	var req client.UpsertRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, &client.APIError{Code: client.CodeInvalidArgument, Message: err.Error()})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range req.Vectors {
		f.vecs[v.ID] = v
	}
	f.seq++
	writeJSON(w, http.StatusOK, client.UpsertResponse{Upserted: len(req.Vectors), Seq: f.seq})
}

func (f *fakeShard) deleteBatch(w http.ResponseWriter, r *http.Request) {
	if f.writeRefused(w, r) {
		return
	}
	var req client.DeleteRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, &client.APIError{Code: client.CodeInvalidArgument, Message: err.Error()})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, id := range req.IDs {
		if _, ok := f.vecs[id]; ok {
			delete(f.vecs, id)
			n++
		}
	}
	f.seq++
	writeJSON(w, http.StatusOK, client.DeleteResponse{Deleted: n, Seq: f.seq})
}

func (f *fakeShard) deleteOne(w http.ResponseWriter, r *http.Request) {
	if f.writeRefused(w, r) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.vecs[r.PathValue("id")]
	delete(f.vecs, r.PathValue("id"))
	f.seq++
	writeJSON(w, http.StatusOK, client.DeleteOneResponse{Deleted: ok, Seq: f.seq})
}

func (f *fakeShard) get(w http.ResponseWriter, r *http.Request) {
	if f.failing(w) {
		return
	}
	f.gets.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set(client.SeqHeader, strconv.FormatUint(f.seq, 10))
	v, ok := f.vecs[r.PathValue("id")]
	if !ok {
		writeErr(w, &client.APIError{Code: client.CodeNotFound, Message: "no such id"})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (f *fakeShard) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.vecs {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
