package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/client"
)

// fakeRouter stores upserts by id and counts the vectors it received, so a test sees
// duplicates sent, not only duplicates stored. failAfter > 0 makes every upsert after
// that many answer 503.
type fakeRouter struct {
	mu        sync.Mutex
	stored    map[string][]float32
	parts     map[string]string
	received  int
	requests  atomic.Int64
	failAfter int64
	token     string
	// hold, when set, keeps every upsert after the first waiting until it is closed.
	hold chan struct{}
}

func newFakeRouter(t *testing.T) (*fakeRouter, *routerPool) {
	f := &fakeRouter{stored: map[string][]float32{}, parts: map[string]string{}, token: "tok"}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c := client.New(srv.URL, client.WithToken("tok"))
	return f, &routerPool{desc: "fake", clients: []*client.Client{c}}
}

// fakeState is what a fakeRouter holds, copied under its lock.
type fakeState struct {
	stored   map[string][]float32
	parts    map[string]string
	received int
}

// state copies what f holds under its lock: the test reads it while the server's
// handlers may still run (and the race detector does not see the socket between them).
func (f *fakeRouter) state() fakeState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fakeState{stored: maps.Clone(f.stored), parts: maps.Clone(f.parts), received: f.received}
}

func (f *fakeRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/vectors" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(client.ErrorBody{Error: client.APIError{Code: client.CodeUnauthorized, Message: "no"}})
		return
	}
	n := f.requests.Add(1)
	if f.hold != nil && n > 1 {
		<-f.hold
	}
	if f.failAfter > 0 && n > f.failAfter {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(client.ErrorBody{Error: client.APIError{Code: client.CodeUnavailable, Message: "down"}})
		return
	}
	var req client.UpsertRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[string]bool{}
	for _, v := range req.Vectors {
		if seen[v.ID] {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(client.ErrorBody{Error: client.APIError{Code: client.CodeInvalidArgument, Message: "duplicate id in batch"}})
			return
		}
		seen[v.ID] = true
	}
	for _, v := range req.Vectors {
		vec, err := client.DecodeB64(v.VectorB64, 0)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.stored[v.ID] = vec
		f.parts[v.ID] = v.Partition
		f.received++
	}
	_ = json.NewEncoder(w).Encode(client.UpsertResponse{Upserted: len(req.Vectors), Seq: 1})
}

func testIndex(dim int32, metric annv1alpha1.Metric) *annv1alpha1.AnnIndex {
	return &annv1alpha1.AnnIndex{ObjectMeta: metav1.ObjectMeta{Name: "idx", Namespace: "ns"},
		Spec: annv1alpha1.AnnIndexSpec{Dimension: dim, Metric: metric}}
}

func fvecsFile(t *testing.T, dir, name string, vecs [][]float32) string {
	var b bytes.Buffer
	for _, v := range vecs {
		b.Write(fmt.Appendf(nil, "%c%c%c%c", byte(len(v)), 0, 0, 0))
		for _, x := range v {
			u := math.Float32bits(x)
			b.Write([]byte{byte(u), byte(u >> 8), byte(u >> 16), byte(u >> 24)})
		}
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func seqVecs(n, dim int, base float32) [][]float32 {
	out := make([][]float32, n)
	for i := range out {
		out[i] = make([]float32, dim)
		for j := range out[i] {
			out[i][j] = base + float32(i) + float32(j)/10
		}
	}
	return out
}

func testImportOptions(dir string) *importOptions {
	return &importOptions{batch: 10, concurrency: 3, maxRejected: 0, precheck: true, retries: 1,
		timeout: 5e9, progressTick: 1e9, noProgress: true, checkpoint: filepath.Join(dir, "cp.json")}
}

func doImport(t *testing.T, o *importOptions, pool *routerPool, idx *annv1alpha1.AnnIndex, paths ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := importEnv{idx: idx, out: &out, errOut: &errOut, logf: func(int, string, ...any) {},
		connect: func() (*routerPool, error) { return pool, nil }}
	err := importFiles(context.Background(), o, env, paths)
	return out.String() + errOut.String(), err
}

func TestImportGeneratedIDsAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	a := fvecsFile(t, dir, "a.fvecs", seqVecs(25, 4, 0))
	jl := filepath.Join(dir, "b.jsonl")
	os.WriteFile(jl, []byte("[1,2,3,4]\n\n[5,6,7,8]\n"), 0o644)
	router, pool := newFakeRouter(t)
	o := testImportOptions(dir)
	o.idPrefix, o.idStart, o.partition = "v", 100, "p1"
	out, err := doImport(t, o, pool, testIndex(4, annv1alpha1.MetricL2), a, jl)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// a.fvecs: rows 0..24 -> v100..v124; b.jsonl: lines 0 and 2 -> v125, v127.
	if len(router.state().stored) != 27 || router.state().received != 27 {
		t.Fatalf("stored %d, received %d:\n%s", len(router.state().stored), router.state().received, out)
	}
	for _, id := range []string{"v100", "v124", "v125", "v127"} {
		if _, ok := router.state().stored[id]; !ok || router.state().parts[id] != "p1" {
			t.Fatalf("id %s missing or without partition; have %v", id, keys(router.state().stored))
		}
	}
	if got := router.state().stored["v103"]; got[0] != 3 || got[3] != 3.3 {
		t.Fatalf("v103 = %v", got)
	}
	if !strings.Contains(out, "Imported 27 vectors into idx from 2 file(s)") || !strings.Contains(out, "Rejected 0 rows.") {
		t.Fatalf("summary:\n%s", out)
	}
	if _, err := os.Stat(o.checkpoint); !os.IsNotExist(err) {
		t.Fatalf("checkpoint left after a complete import: %v", err)
	}
}

func keys(m map[string][]float32) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestImportRefusesBadRowsBeforeWriting(t *testing.T) {
	dir := t.TempDir()
	jl := filepath.Join(dir, "a.jsonl")
	os.WriteFile(jl, []byte(`{"id":"a","vector":[1,2]}
{"id":"b","vector":[1,2,3]}
{"id":"c","vector":[1,NaN]}
{"id":"a","vector":[3,4]}
{"id":"d","vector":[0,0]}
{"id":"e","vector":[5,6]}
{"id":"  ","vector":[7,8]}
`), 0o644)
	router, pool := newFakeRouter(t)
	o := testImportOptions(dir)
	out, err := doImport(t, o, pool, testIndex(2, annv1alpha1.MetricCosine), jl)
	if exitCodeOf(err) != exitBadInput || router.requests.Load() != 0 {
		t.Fatalf("exit %d, %d requests: %v\n%s", exitCodeOf(err), router.requests.Load(), err, out)
	}
	for _, want := range []string{"5 bad rows", "row 1: dimension 3, want 2", "row 2: contains NaN", "row 4: vector: a zero vector", "row 6: id: only whitespace", "row 3: duplicate id (also at " + jl + " row 0)", "nothing was written"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}

	// Allowed: the good rows go in, the bad ones are counted and described.
	o.maxRejected = 10
	out, err = doImport(t, o, pool, testIndex(2, annv1alpha1.MetricCosine), jl)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(router.state().stored) != 2 || router.state().stored["a"][0] != 1 || router.state().stored["e"] == nil {
		t.Fatalf("stored %v", router.state().stored)
	}
	if !strings.Contains(out, "Imported 2 vectors") || !strings.Contains(out, "Rejected 5 rows:") {
		t.Fatalf("summary:\n%s", out)
	}

	// A file of another dimension is refused as a whole.
	f := fvecsFile(t, dir, "x.fvecs", seqVecs(3, 5, 0))
	if _, err := doImport(t, o, pool, testIndex(2, annv1alpha1.MetricL2), f); exitCodeOf(err) != exitBadInput ||
		!strings.Contains(err.Error(), "vectors of dimension 5, index idx has dimension 2") {
		t.Fatalf("dimension mismatch: %v", err)
	}
}

// Without the precheck, a JSON Lines file's rows are counted by its lines (countRows),
// blank ones and an unterminated last one included, so the next file's ids follow on.
func TestImportWithoutPrecheckNumbersIDsAfterJSONLines(t *testing.T) {
	dir := t.TempDir()
	jl := filepath.Join(dir, "a.jsonl")
	if err := os.WriteFile(jl, []byte("[1,2]\n\n[3,4]"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := fvecsFile(t, dir, "b.fvecs", seqVecs(2, 2, 0))
	router, pool := newFakeRouter(t)
	o := testImportOptions(dir)
	o.precheck, o.idPrefix = false, "v"
	if out, err := doImport(t, o, pool, testIndex(2, annv1alpha1.MetricL2), jl, b); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// a.jsonl: lines 0 and 2 -> v0, v2 (3 rows); b.fvecs: rows 0, 1 -> v3, v4.
	for _, id := range []string{"v0", "v2", "v3", "v4"} {
		if router.state().stored[id] == nil {
			t.Fatalf("id %s missing; have %v", id, keys(router.state().stored))
		}
	}
	if len(router.state().stored) != 4 {
		t.Fatalf("stored %v", keys(router.state().stored))
	}
}

func TestImportWithoutPrecheckStopsAtTheLimit(t *testing.T) {
	dir := t.TempDir()
	vecs := seqVecs(50, 2, 0)
	vecs[35][1] = float32(math.NaN())
	f := fvecsFile(t, dir, "a.fvecs", vecs)
	router, pool := newFakeRouter(t)
	o := testImportOptions(dir)
	o.precheck, o.concurrency = false, 1
	_, err := doImport(t, o, pool, testIndex(2, annv1alpha1.MetricL2), f)
	if exitCodeOf(err) != exitIncomplete || !strings.Contains(err.Error(), "row 35: component 1 is NaN") {
		t.Fatalf("exit %d: %v", exitCodeOf(err), err)
	}
	if n := len(router.state().stored); n < 10 || n > 30 {
		t.Fatalf("stored %d vectors before the bad row's batch", n)
	}
}

func TestImportResumeSendsOnlyUnacknowledgedBatches(t *testing.T) {
	dir := t.TempDir()
	f := fvecsFile(t, dir, "a.fvecs", seqVecs(200, 3, 0))
	router, pool := newFakeRouter(t)
	router.failAfter = 7 // the router goes away after 7 batches
	o := testImportOptions(dir)
	o.concurrency = 1
	out, err := doImport(t, o, pool, testIndex(3, annv1alpha1.MetricL2), f)
	if exitCodeOf(err) != exitIncomplete || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("exit %d: %v\n%s", exitCodeOf(err), err, out)
	}
	if router.state().received != 70 {
		t.Fatalf("received %d vectors before the failure", router.state().received)
	}
	raw, err := os.ReadFile(o.checkpoint)
	if err != nil || !strings.Contains(string(raw), `"acked": "0-6"`) {
		t.Fatalf("checkpoint: %v\n%s", err, raw)
	}

	// Another batch size or file is another import: refused.
	o2 := *o
	o2.resume, o2.batch = true, 20
	if _, err := doImport(t, &o2, pool, testIndex(3, annv1alpha1.MetricL2), f); err == nil || !strings.Contains(err.Error(), "--batch-size") {
		t.Fatalf("resume with another batch size: %v", err)
	}

	router.failAfter = 0
	o.resume = true
	out, err = doImport(t, o, pool, testIndex(3, annv1alpha1.MetricL2), f)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// Every vector once: 70 before, 130 now, none sent twice.
	if len(router.state().stored) != 200 || router.state().received != 200 {
		t.Fatalf("stored %d, received %d", len(router.state().stored), router.state().received)
	}
	if !strings.Contains(out, "Imported 130 vectors") || !strings.Contains(out, "Skipped 7 batches") {
		t.Fatalf("summary:\n%s", out)
	}
}

// TestImportSavesTheCheckpointAtTheFirstAck: the first acknowledged batch (batch 0) is in the
// checkpoint at once, not only at the periodic save, so an import killed early (or a
// small import interrupted quickly) can resume.
func TestImportSavesTheCheckpointAtTheFirstAck(t *testing.T) {
	dir := t.TempDir()
	f := fvecsFile(t, dir, "a.fvecs", seqVecs(50, 3, 0))
	router, pool := newFakeRouter(t)
	router.hold = make(chan struct{})
	o := testImportOptions(dir)
	o.concurrency = 1
	o.saveEvery = time.Hour // only the first-ack save can write it while the router holds
	done := make(chan error, 1)
	go func() {
		_, err := doImport(t, o, pool, testIndex(3, annv1alpha1.MetricL2), f)
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		raw, _ := os.ReadFile(o.checkpoint)
		if strings.Contains(string(raw), `"acked": "0"`) {
			break
		}
		if time.Now().After(deadline) {
			close(router.hold)
			t.Fatalf("no checkpoint with the first batch while the second waits: %q", raw)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(router.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(o.checkpoint); !os.IsNotExist(err) {
		t.Fatalf("checkpoint left after a complete import: %v", err)
	}
}

func TestImportBadToken(t *testing.T) {
	dir := t.TempDir()
	f := fvecsFile(t, dir, "a.fvecs", seqVecs(5, 2, 0))
	router, pool := newFakeRouter(t)
	router.token = "other"
	_, err := doImport(t, testImportOptions(dir), pool, testIndex(2, annv1alpha1.MetricL2), f)
	if err == nil || !strings.Contains(err.Error(), "refused the write token") {
		t.Fatalf("bad token: %v", err)
	}
}

func TestRanges(t *testing.T) {
	set := map[int64]bool{0: true, 1: true, 2: true, 5: true, 7: true, 8: true}
	s := formatRanges(set)
	if s != "0-2,5,7-8" {
		t.Fatalf("formatRanges = %q", s)
	}
	back, err := parseRanges(s)
	if err != nil || len(back) != len(set) {
		t.Fatalf("parseRanges: %v %v", back, err)
	}
	for _, bad := range []string{"x", "3-1", "-1", "1-"} {
		if _, err := parseRanges(bad); err == nil {
			t.Errorf("parseRanges(%q) accepted", bad)
		}
	}
}
