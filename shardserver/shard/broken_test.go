package shard

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/apitest"
	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/slots"
)

// captureLog sends the default logger to a buffer for the rest of the test.
func captureLog(t *testing.T) *bytes.Buffer {
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })
	return &buf
}

func item(id string, vec []float32) upsertItem {
	return upsertItem{id: id, vec: vec, slot: slots.Of(slots.KeyOf(id, ""))}
}

// TestIndexAddFailureStopsTheShard injects a record the index refuses (a NaN vector,
// which validation keeps out of the WAL, written to the store directly): the write is
// not acknowledged, and the shard stops serving, loudly, instead of answering from an
// index that silently lacks a logged record. The log still holds the record, so the
// restart fails too, naming it.
func TestIndexAddFailureStopsTheShard(t *testing.T) {
	logs := captureLog(t)
	cfg := testConfig(t.TempDir())
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.started.Store(true)
	h := s.Handler()
	good := apitest.Vector(testDim, 0.5)
	call := func(method, path, body string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		return rec.Code, rec.Body.String()
	}
	if code, body := call("POST", "/v1/vectors", `{"vectors":[{"id":"keep","vector":`+good+`}]}`); code != 200 {
		t.Fatalf("seed: %d %s", code, body)
	}
	nan := make([]float32, testDim)
	nan[2] = float32(math.NaN())
	_, _, err = s.store.Write(context.Background(), record{op: opUpsert, upserts: []upsertItem{item("x", make([]float32, testDim)), item("bad", nan)}})
	if !errors.Is(err, errBroken) || !errors.Is(err, hnsw.ErrInvalidVector) || !strings.Contains(err.Error(), "record 2") {
		t.Fatalf("write of a record the index refuses: %v", err)
	}
	if s.store.Applied() != 1 {
		t.Fatalf("applied %d, want 1: the refused record must not count as applied", s.store.Applied())
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/vectors", `{"vectors":[{"id":"more","vector":` + good + `}]}`},
		{"POST", "/v1/vectors:delete", `{"ids":["keep"]}`},
		{"DELETE", "/v1/vectors/keep", ``},
		{"GET", "/v1/vectors/keep", ``},
		{"POST", "/v1/search", `{"vector":` + good + `,"k":1}`},
		{"POST", "/v1/search:batch", `{"queries":[{"vector":` + good + `,"k":1}]}`},
		{"GET", "/readyz", ``},
		{"GET", "/healthz", ``},
	} {
		code, body := call(c.method, c.path, c.body)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, client.CodeUnavailable) || !strings.Contains(body, "record 2") {
			t.Errorf("%s %s on a broken shard: %d %s", c.method, c.path, code, body)
		}
	}
	if rep := s.loadReport(time.Now(), true); rep.Ready {
		t.Error("the load report says ready")
	}
	_, metrics := call("GET", "/metrics", ``)
	for _, want := range []string{`annshard_shard_broken{cause="index"} 1`, `annshard_shard_broken{cause="wal"} 0`, "annshard_shard_broken_seq 2"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if line := logs.String(); !strings.Contains(line, "Index diverged from the write-ahead log") || !strings.Contains(line, "seq=2") {
		t.Errorf("no log line naming record 2: %s", line)
	}
	if err := s.store.Snapshot(); !errors.Is(err, errBroken) {
		t.Errorf("snapshot of a broken store: %v", err)
	}
	if err := s.Close(); !errors.Is(err, errBroken) {
		t.Errorf("Close of a broken server: %v, want the snapshot refused", err)
	}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "record 2") || !errors.Is(err, hnsw.ErrInvalidVector) {
		t.Fatalf("restart over a log the index refuses: %v", err)
	}
}

// TestIndexDeleteFailureRestartRepairs injects a divergence in memory (a key removed from
// the index behind the store's back): the next delete of that id finds the index
// disagreeing, the store stops, and a restart rebuilds the state from the log.
func TestIndexDeleteFailureRestartRepairs(t *testing.T) {
	captureLog(t)
	dir := t.TempDir()
	st, err := OpenStore(testStoreConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	r := newRand(3)
	ctx := context.Background()
	if _, _, err := st.Write(ctx, record{op: opUpsert, upserts: []upsertItem{item("a", randVec(r, testDim)), item("b", randVec(r, testDim))}}); err != nil {
		t.Fatal(err)
	}
	st.mu.RLock()
	key := st.st.ids["a"]
	st.mu.RUnlock()
	if err := st.st.idx.Delete(key); err != nil {
		t.Fatal(err)
	}
	_, _, err = st.Write(ctx, record{op: opDelete, deletes: []deleteItem{{id: "a", slot: slots.Of("a")}}})
	if !errors.Is(err, errBroken) || !errors.Is(err, hnsw.ErrNotFound) || !strings.Contains(err.Error(), "record 2") {
		t.Fatalf("delete the index disagrees with: %v", err)
	}
	if _, _, err := st.Write(ctx, record{op: opUpsert, upserts: []upsertItem{item("c", randVec(r, testDim))}}); !errors.Is(err, errBroken) {
		t.Fatalf("write after the breakage: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = OpenStore(testStoreConfig(dir))
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer st.Close()
	if st.Broken() != nil || st.Applied() != 2 || st.Len() != 1 {
		t.Fatalf("after restart: broken %v, applied %d, %d vectors; want healthy at 2 with 1", st.Broken(), st.Applied(), st.Len())
	}
	if _, ok := get(t, st, "a", st.hidden.Load()); ok {
		t.Fatal("the deleted id is back")
	}
	if _, ok := get(t, st, "b", st.hidden.Load()); !ok {
		t.Fatal("b is gone")
	}
}

// TestReplicatedRecordTheIndexRefuses: a replica stops the same way.
func TestReplicatedRecordTheIndexRefuses(t *testing.T) {
	captureLog(t)
	st, err := OpenStore(testStoreConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	inf := make([]float32, testDim)
	inf[0] = float32(math.Inf(-1))
	ctx := context.Background()
	if err := st.ApplyReplicated(ctx, 1, encodeUpsert(testDim, []upsertItem{item("a", make([]float32, testDim))})); err != nil {
		t.Fatal(err)
	}
	err = st.ApplyReplicated(ctx, 2, encodeUpsert(testDim, []upsertItem{item("b", inf)}))
	if !errors.Is(err, errBroken) || !strings.Contains(err.Error(), "record 2") {
		t.Fatalf("replicated record the index refuses: %v", err)
	}
	if err := st.ApplyReplicated(ctx, 3, encodeUpsert(testDim, []upsertItem{item("c", make([]float32, testDim))})); !errors.Is(err, errBroken) {
		t.Fatalf("next record after the breakage: %v", err)
	}
	if st.Applied() != 1 {
		t.Fatalf("applied %d, want 1", st.Applied())
	}
}
