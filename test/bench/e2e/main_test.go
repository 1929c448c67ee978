package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/proctest"
)

var shardserver proctest.Binary

func TestMain(m *testing.M) {
	code := m.Run()
	shardserver.Remove()
	os.Exit(code)
}

// TestTinyRun runs the whole bench on a tiny configuration with real processes and
// checks the shape and the sanity of what it reports (not its timings).
func TestTinyRun(t *testing.T) {
	bin := shardserver.Need(t)
	o := options{n: 600, dim: 8, queries: 50, k: 5, ef: 32, m: 8, efc: 40, batch: 100, writers: 3,
		recallQueries: 30, concurrency: []int{1, 3}, duration: 400 * time.Millisecond, rounds: 2,
		warmup: 50 * time.Millisecond, walSync: "Interval", bin: bin, seed: 3, profile: filepath.Join(t.TempDir(), "profiles")}
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	recs, err := run(ctx, o, &log)
	if err != nil {
		t.Fatalf("run: %v\nlog:\n%s", err, log.String())
	}

	var out bytes.Buffer
	if err := writeJSON(&out, recs); err != nil {
		t.Fatal(err)
	}
	// Every line is one JSON object with a kind; read them back as a user's tool would.
	var lines []map[string]any
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	byKind := map[string][]map[string]any{}
	for _, m := range lines {
		k, _ := m["kind"].(string)
		byKind[k] = append(byKind[k], m)
	}
	num := func(m map[string]any, key string) float64 {
		t.Helper()
		v, ok := m[key].(float64)
		if !ok {
			t.Fatalf("%v: no number %q", m, key)
		}
		return v
	}

	if c := byKind[kindConfig]; len(c) != 1 || num(c[0], "vectors") != 600 || num(c[0], "shards") != 2 || num(c[0], "replicas") != 2 {
		t.Errorf("config lines %v", c)
	}
	if l := byKind[kindLoad]; len(l) != 2 || l[0]["when"] != "start" || l[1]["when"] != "end" {
		t.Errorf("load lines %v", l)
	}
	ups := map[string]map[string]any{}
	for _, u := range byKind[kindUpsert] {
		ups[u["path"].(string)] = u
		if num(u, "vectorsPerSecond") <= 0 {
			t.Errorf("upsert %v: no rate", u)
		}
	}
	if len(ups) != 2 || ups[pathRouter] == nil || ups[pathInproc] == nil {
		t.Fatalf("upsert lines %v", byKind[kindUpsert])
	}
	// Replicated means acknowledged and then copied: never faster than acknowledged.
	if r := ups[pathRouter]; num(r, "replicatedVectorsPerSecond") > num(r, "vectorsPerSecond") {
		t.Errorf("replicated faster than acknowledged: %v", r)
	}
	for _, r := range byKind[kindRecall] {
		// 600 vectors of dimension 8: every path finds nearly every true neighbour.
		if v := num(r, "recall"); v < 0.9 || v > 1 {
			t.Errorf("recall %v", r)
		}
	}
	if len(byKind[kindRecall]) != 3 {
		t.Errorf("recall lines %v", byKind[kindRecall])
	}

	search := map[string]map[string]any{}
	for _, s := range byKind[kindSearch] {
		key := s["path"].(string) + "/" + jsonNum(s["concurrency"])
		search[key] = s
		p50, p99 := num(s, "p50Ms"), num(s, "p99Ms")
		if num(s, "qps") <= 0 || num(s, "queries") < 1 || p50 <= 0 || p99 < p50 || num(s, "queriesPerCPUSecond") <= 0 {
			t.Errorf("search line %v", s)
		}
		// Through the router both the router and the shards work for every query.
		if s["path"] == pathRouter && (num(s, "routerCPUMicros") <= 0 || num(s, "shardsCPUMicros") <= 0) {
			t.Errorf("router search line without the CPU of each side: %v", s)
		}
		// Each query asks both shards once (no hedging, no failures): 2 searches at the
		// replicas per query, in 2 requests or fewer when micro-batches carry several; a
		// batch carries at least one and at most the router's --batch-max (16).
		if s["path"] == pathRouter {
			perQuery, perRequest := num(s, "shardRequestsPerQuery"), num(s, "searchesPerShardRequest")
			if !near(perQuery*perRequest, 2) || perRequest < 1 || perRequest > 16 {
				t.Errorf("router search line: %v shard requests per query carrying %v searches each", perQuery, perRequest)
			}
		}
	}
	for _, p := range []string{pathRouter, pathShard, pathInproc, pathSplit} {
		for _, c := range []string{"1", "3"} {
			if search[p+"/"+c] == nil {
				t.Errorf("no search line for %s at %s clients; have %v", p, c, byKind[kindSearch])
			}
		}
	}
	// Ratios are the quotients of the figures printed next to them.
	var goals int
	for _, r := range byKind[kindRatio] {
		if r["goal"] != nil {
			goals++
		}
		if r["metric"] == "vectorsPerSecond" {
			if got, want := num(r, "ratio"), num(ups[pathRouter], "vectorsPerSecond")/num(ups[pathInproc], "vectorsPerSecond"); !near(got, want) {
				t.Errorf("upsert ratio %v, want %g", r, want)
			}
			continue
		}
		a, b, _ := strings.Cut(r["of"].(string), "/")
		c := jsonNum(r["concurrency"])
		metric := r["metric"].(string)
		num, den := search[a+"/"+c], search[b+"/"+c]
		if num == nil || den == nil {
			t.Fatalf("ratio %v names no measured paths", r)
		}
		if got, want := r["ratio"].(float64), num[metric].(float64)/den[metric].(float64); !near(got, want) {
			t.Errorf("ratio %v, want %g", r, want)
		}
	}
	if len(byKind[kindRatio]) != 1+7*2 || goals != 1 {
		t.Errorf("%d ratio lines, %d with a goal: %v", len(byKind[kindRatio]), goals, byKind[kindRatio])
	}

	// -profile: a CPU profile (gzipped protobuf) of the router and of every shard process.
	for _, name := range []string{"router", "shard0-0", "shard0-1", "shard1-0", "shard1-1"} {
		b, err := os.ReadFile(filepath.Join(o.profile, name+".pprof"))
		if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("profile of %s: %d bytes, %v", name, len(b), err)
		}
	}

	// The table for people names every section.
	var table bytes.Buffer
	if err := writeTable(&table, recs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bulk upsert", "recall@k", "search", "ratio", "router/inproc", "router/split", "split/inproc", "load average at the start"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

// jsonNum prints a whole JSON number (concurrency) as the key the test indexes by.
func jsonNum(v any) string {
	f, _ := v.(float64)
	return strconv.Itoa(int(f))
}

func near(a, b float64) bool {
	d := a - b
	return d < 1e-9*max(1, b) && -d < 1e-9*max(1, b)
}

func TestParseInts(t *testing.T) {
	got, err := parseInts("1, 4,16")
	if err != nil || len(got) != 3 || got[0] != 1 || got[1] != 4 || got[2] != 16 {
		t.Errorf("parseInts: %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "1,x", "-2"} {
		if _, err := parseInts(bad); err == nil {
			t.Errorf("parseInts(%q) accepted", bad)
		}
	}
}

func TestUpsertRetriesUnavailable(t *testing.T) {
	var calls atomic.Int64
	status := func(n int64) int { // answers: 503, 503, then 200
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		switch code := status(n); code {
		case http.StatusOK:
			fmt.Fprint(w, `{"upserted":1,"seq":7}`)
		case http.StatusServiceUnavailable:
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"error":{"code":%q,"message":"busy"}}`, client.CodeUnavailable)
		default:
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"error":{"code":%q,"message":"bad"}}`, client.CodeInvalidArgument)
		}
	}))
	defer srv.Close()
	c := client.New(srv.URL)
	req := &client.UpsertRequest{Vectors: []client.Vector{{ID: "1", Vector: []float32{1}}}}
	var retries atomic.Int64
	if err := upsertRetrying(context.Background(), c, req, &retries); err != nil || retries.Load() != 2 || calls.Load() != 3 {
		t.Fatalf("err %v after %d calls, %d retries; want success after 3 calls, 2 retries", err, calls.Load(), retries.Load())
	}
	// A refusal is not retried.
	status = func(int64) int { return http.StatusBadRequest }
	calls.Store(0)
	if err := upsertRetrying(context.Background(), c, req, &retries); err == nil || calls.Load() != 1 {
		t.Fatalf("err %v after %d calls; want the refusal at once", err, calls.Load())
	}
}
