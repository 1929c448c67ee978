package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// exactIndex is an exhaustive index: it returns the true nearest neighbours, so driving
// the harness with it must give recall 1 and lets the measuring code be checked on its own.
type exactIndex struct {
	mu     sync.RWMutex
	metric metric
	keys   []uint64
	data   *vectors
}

func newExact(p indexParams) (annIndex, error) {
	if p.dim <= 0 {
		return nil, fmt.Errorf("dimension %d", p.dim)
	}
	return &exactIndex{metric: p.metric, data: &vectors{dim: p.dim}}, nil
}

func (x *exactIndex) Add(key uint64, vec []float32) error {
	if len(vec) != x.data.dim {
		return fmt.Errorf("dimension %d, want %d", len(vec), x.data.dim)
	}
	v := x.metric.prepare(&vectors{dim: len(vec), data: vec})
	x.mu.Lock()
	defer x.mu.Unlock()
	x.keys = append(x.keys, key)
	x.data.data = append(x.data.data, v.data...)
	return nil
}

func (x *exactIndex) NewSearcher() searcher { return exactSearcher{x} }
func (x *exactIndex) MemoryBytes() int64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return int64(4*len(x.data.data) + 8*len(x.keys))
}
func (x *exactIndex) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.keys)
}

type exactSearcher struct{ x *exactIndex }

func (s exactSearcher) Search(keys []uint64, q []float32, k, _ int) ([]uint64, error) {
	s.x.mu.RLock()
	defer s.x.mu.RUnlock()
	pq := s.x.metric.prepare(&vectors{dim: len(q), data: q})
	keys = keys[:0]
	for _, nb := range bruteForce(nil, s.x.data, pq.data, k, s.x.metric.distance()) {
		keys = append(keys, s.x.keys[nb.id])
	}
	return keys, nil
}

// halfIndex returns only the nearer half of the true top k: recall exactly 0.5 for even k.
type halfIndex struct{ annIndex }

func (h halfIndex) NewSearcher() searcher { return halfSearcher{h.annIndex.NewSearcher()} }

type halfSearcher struct{ searcher }

func (h halfSearcher) Search(keys []uint64, q []float32, k, ef int) ([]uint64, error) {
	keys, err := h.searcher.Search(keys, q, k, ef)
	return keys[:len(keys)/2], err
}

// failingIndex fails its nth Add, or every search, to check that errors surface.
type failingIndex struct {
	annIndex
	addsLeft int
	mu       sync.Mutex
}

func (f *failingIndex) Add(key uint64, vec []float32) error {
	f.mu.Lock()
	f.addsLeft--
	fail := f.addsLeft < 0
	f.mu.Unlock()
	if fail {
		return errors.New("disk on fire")
	}
	return f.annIndex.Add(key, vec)
}

func TestParseFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, c *config)
	}{
		{name: "gen defaults", args: []string{"-gen", "100,8,4,3"}, check: func(t *testing.T, c *config) {
			if *c.gen != (genSpec{100, 8, 4, 3}) || c.nq != 1000 || c.k != 10 || c.m != 16 || c.efc != 200 ||
				!slices.Equal(c.efs, []int{10, 20, 40, 80}) || c.metric != metricL2 || c.json ||
				c.threads != runtime.GOMAXPROCS(0) {
				t.Fatalf("got %+v gen %+v", c, c.gen)
			}
		}},
		{name: "files and everything", args: []string{"-base", "b.fvecs", "-query", "q.bvecs", "-gt", "g.ivecs", "-k", "5",
			"-m", "8", "-efc", "64", "-ef", "80, 10,10", "-threads", "3", "-json", "-metric", "cosine"}, check: func(t *testing.T, c *config) {
			if c.gen != nil || c.base != "b.fvecs" || c.query != "q.bvecs" || c.gt != "g.ivecs" || c.k != 5 || c.m != 8 ||
				c.efc != 64 || !slices.Equal(c.efs, []int{80, 10, 10}) || c.threads != 3 || !c.json || c.metric != metricCosine {
				t.Fatalf("got %+v", c)
			}
		}},
		{name: "negative seed", args: []string{"-gen", "10,2,1,-5", "-nq", "7"}, check: func(t *testing.T, c *config) {
			if c.gen.seed != -5 || c.nq != 7 {
				t.Fatalf("got %+v nq %d", c.gen, c.nq)
			}
		}},
		{name: "nothing", args: nil, wantErr: "need -base and -query"},
		{name: "base without query", args: []string{"-base", "b.fvecs"}, wantErr: "need -base and -query"},
		{name: "gen and files", args: []string{"-gen", "10,2,1,1", "-base", "b.fvecs"}, wantErr: "-gen excludes"},
		{name: "gen with gt", args: []string{"-gen", "10,2,1,1", "-gt", "g.ivecs"}, wantErr: "-gen excludes"},
		{name: "gen three fields", args: []string{"-gen", "10,2,1"}, wantErr: "want n,dim,clusters,seed"},
		{name: "gen five fields", args: []string{"-gen", "10,2,1,1,1"}, wantErr: "want n,dim,clusters,seed"},
		{name: "gen empty", args: []string{"-gen", ""}, wantErr: "want n,dim,clusters,seed"},
		{name: "gen not a number", args: []string{"-gen", "10,x,1,1"}, wantErr: "dim"},
		{name: "gen zero n", args: []string{"-gen", "0,2,1,1"}, wantErr: "n must be positive"},
		{name: "gen zero clusters", args: []string{"-gen", "10,2,0,1"}, wantErr: "clusters must be positive"},
		{name: "gen bad seed", args: []string{"-gen", "10,2,1,1.5"}, wantErr: "seed"},
		{name: "gen too large", args: []string{"-gen", "100000000,1000,1,1"}, wantErr: "too large"},
		{name: "nq without gen", args: []string{"-base", "b.fvecs", "-query", "q.fvecs", "-nq", "5"}, wantErr: "-nq applies to -gen"},
		{name: "nq zero", args: []string{"-gen", "10,2,1,1", "-nq", "0"}, wantErr: "-nq must be positive"},
		{name: "ef empty", args: []string{"-gen", "10,2,1,1", "-ef", ""}, wantErr: "parse -ef"},
		{name: "ef trailing comma", args: []string{"-gen", "10,2,1,1", "-ef", "10,"}, wantErr: "parse -ef"},
		{name: "ef zero", args: []string{"-gen", "10,2,1,1", "-ef", "10,0"}, wantErr: "ef must be positive"},
		{name: "ef word", args: []string{"-gen", "10,2,1,1", "-ef", "ten"}, wantErr: "parse -ef"},
		{name: "bad metric", args: []string{"-gen", "10,2,1,1", "-metric", "L1"}, wantErr: "unknown metric"},
		{name: "k zero", args: []string{"-gen", "10,2,1,1", "-k", "0"}, wantErr: "-k must be positive"},
		{name: "m negative", args: []string{"-gen", "10,2,1,1", "-m", "-1"}, wantErr: "-m must be positive"},
		{name: "threads negative", args: []string{"-gen", "10,2,1,1", "-threads", "-2"}, wantErr: "-threads"},
		{name: "unknown flag", args: []string{"-gen", "10,2,1,1", "-effs", "3"}, wantErr: "not defined"},
		{name: "positional", args: []string{"-gen", "10,2,1,1", "extra"}, wantErr: "unexpected arguments"},
		{name: "quant int8 rerank", args: []string{"-gen", "10,2,1,1", "-quant", "INT8", "-rerank"}, check: func(t *testing.T, c *config) {
			if c.quant != "int8" || !c.rerank {
				t.Fatalf("quant %q rerank %v", c.quant, c.rerank)
			}
		}},
		{name: "quant none", args: []string{"-gen", "10,2,1,1", "-quant", "none"}, check: func(t *testing.T, c *config) {
			if c.quant != "" {
				t.Fatalf("quant %q", c.quant)
			}
		}},
		{name: "quant int4", args: []string{"-gen", "10,2,1,1", "-quant", "int4"}, wantErr: "want int8"},
		{name: "rerank alone", args: []string{"-gen", "10,2,1,1", "-rerank"}, wantErr: "-rerank needs -quant int8"},
		{name: "quant with plot", args: []string{"-gen", "10,2,1,1", "-quant", "int8", "-plot", "x.svg"}, wantErr: "-plot draws one index"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
	t.Run("help", func(t *testing.T) {
		var out bytes.Buffer
		if _, err := parseFlags([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-gen") {
			t.Fatalf("got %v and usage %q", err, out.String())
		}
	})
}

func TestCheckGroundTruth(t *testing.T) {
	gt := &groundTruth{width: 3, ids: []int32{0, 1, 2, 3, 4, 5}}
	cases := []struct {
		name      string
		gt        *groundTruth
		nq, n, k  int
		wantError string
	}{
		{"ok", gt, 2, 6, 3, ""},
		{"ok, only k columns checked", gt, 2, 4, 1, ""},
		{"too few columns", gt, 2, 6, 4, "fewer than k=4"},
		{"row count", gt, 3, 6, 3, "2 rows for 3 queries"},
		{"id outside base", gt, 2, 5, 3, "id 5 outside"},
		{"negative id", &groundTruth{width: 1, ids: []int32{-1}}, 1, 5, 1, "id -1 outside"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkGroundTruth(tc.gt, tc.nq, tc.n, tc.k)
			if (tc.wantError == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantError)) {
				t.Fatalf("got %v, want %q", err, tc.wantError)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 100}, {0.99, 198}, {1, 200}, {0, 1}} {
		if got := percentile(d, tc.p); got != tc.want {
			t.Errorf("p%v: got %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("single sample: got %v", got)
	}
}

// jsonKeys are the exact lines of the fixed -json interface.
var (
	buildKeys = []string{"bytesPerVector", "seconds1", "secondsAll"}
	efKeys    = []string{"ef", "p50us", "p99us", "qps1", "qpsAll", "recall"}
)

// runJSON runs the command's main logic on args with -json and checks the output's exact
// shape, returning the ef lines.
func runJSON(t *testing.T, factory indexFactory, args ...string) []efReport {
	t.Helper()
	c, err := parseFlags(append(args, "-json"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c.minMeasure = 0 // one pass per figure: the shape is under test, not the speed
	c.newIndex = factory
	var out bytes.Buffer
	if err := execute(context.Background(), c, newReporter(c, &out)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(c.efs)+2 {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(c.efs)+2, out.String())
	}
	keysOf := func(line string) (map[string]json.RawMessage, []string) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		return m, slices.Sorted(maps.Keys(m))
	}
	m, keys := keysOf(lines[0])
	if !slices.Equal(keys, []string{"build"}) {
		t.Fatalf("first line keys %v", keys)
	}
	if _, keys = keysOf(string(m["build"])); !slices.Equal(keys, buildKeys) {
		t.Fatalf("build keys %v, want %v", keys, buildKeys)
	}
	var b buildReport
	if err := json.Unmarshal(m["build"], &b); err != nil || b.Seconds1 <= 0 || b.SecondsAll <= 0 || b.BytesPerVector <= 0 {
		t.Fatalf("build %+v, %v", b, err)
	}
	var rows []efReport
	for i, line := range lines[1 : len(lines)-1] {
		if _, keys := keysOf(line); !slices.Equal(keys, efKeys) {
			t.Fatalf("ef line %q keys %v, want %v", line, keys, efKeys)
		}
		var r efReport
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if r.Ef != c.efs[i] || r.Recall < 0 || r.Recall > 1 || r.QPS1 <= 0 || r.QPSAll <= 0 || r.P50us <= 0 || r.P50us > r.P99us {
			t.Fatalf("implausible ef line %+v", r)
		}
		rows = append(rows, r)
	}
	m, keys = keysOf(lines[len(lines)-1])
	if !slices.Equal(keys, []string{"bruteQps1"}) {
		t.Fatalf("last line keys %v", keys)
	}
	var qps float64
	if err := json.Unmarshal(m["bruteQps1"], &qps); err != nil || qps <= 0 || math.IsInf(qps, 0) {
		t.Fatalf("bruteQps1 %s, %v", m["bruteQps1"], err)
	}
	return rows
}

func TestEndToEndExactIndex(t *testing.T) {
	for _, m := range []string{"L2", "InnerProduct", "Cosine"} {
		t.Run(m, func(t *testing.T) {
			rows := runJSON(t, newExact, "-gen", "400,12,4,3", "-nq", "30", "-k", "5", "-ef", "8,16", "-threads", "2", "-metric", m)
			for _, r := range rows {
				if r.Recall != 1 {
					t.Fatalf("exact index: recall %v at ef=%d, want 1", r.Recall, r.Ef)
				}
			}
		})
	}
}

func TestEndToEndRecallIsMeasured(t *testing.T) {
	half := func(p indexParams) (annIndex, error) {
		x, err := newExact(p)
		return halfIndex{x}, err
	}
	for _, r := range runJSON(t, half, "-gen", "400,12,4,3", "-nq", "30", "-k", "10", "-ef", "10") {
		if r.Recall != 0.5 {
			t.Fatalf("recall %v for an index that returns half the true neighbours, want 0.5", r.Recall)
		}
	}
}

// TestEndToEndFiles runs on TEXMEX files: an exact index against a written ground truth
// gives recall 1, and a ground truth that disagrees is measured as such.
func TestEndToEndFiles(t *testing.T) {
	base, queries := generate(genSpec{n: 300, dim: 8, clusters: 3, seed: 11}, 20)
	gt, err := exactGroundTruth(context.Background(), base, queries, 10, metricL2, 2)
	if err != nil {
		t.Fatal(err)
	}
	bp, qp, gp := writeFvecs(t, "base.fvecs", base), writeFvecs(t, "query.fvecs", queries), writeIvecs(t, "gt.ivecs", gt)
	t.Run("given ground truth", func(t *testing.T) {
		for _, r := range runJSON(t, newExact, "-base", bp, "-query", qp, "-gt", gp, "-k", "10", "-ef", "10") {
			if r.Recall != 1 {
				t.Fatalf("recall %v, want 1", r.Recall)
			}
		}
	})
	t.Run("computed ground truth", func(t *testing.T) {
		for _, r := range runJSON(t, newExact, "-base", bp, "-query", qp, "-k", "3", "-ef", "10") {
			if r.Recall != 1 {
				t.Fatalf("recall %v, want 1", r.Recall)
			}
		}
	})
	t.Run("bvecs", func(t *testing.T) {
		// uint8 vectors, as in SIFT1B: base and queries quantised from the same data.
		quantise := func(v *vectors) []byte {
			var recs []record
			for i := range v.Len() {
				body := make([]byte, v.dim)
				for j, x := range v.Row(i) {
					body[j] = byte(min(max(x*20+128, 0), 255))
				}
				recs = append(recs, record{dim: int32(v.dim), body: body})
			}
			return encodeRecords(recs)
		}
		bb, qb := writeFile(t, "base.bvecs", quantise(base)), writeFile(t, "query.bvecs", quantise(queries))
		for _, r := range runJSON(t, newExact, "-base", bb, "-query", qb, "-k", "5", "-ef", "10") {
			if r.Recall != 1 {
				t.Fatalf("recall %v, want 1", r.Recall)
			}
		}
	})
	t.Run("wrong ground truth", func(t *testing.T) {
		// Shift every row by one query: recall must drop well below 1.
		shifted := &groundTruth{width: gt.width, ids: append(slices.Clone(gt.ids[gt.width:]), gt.ids[:gt.width]...)}
		for _, r := range runJSON(t, newExact, "-base", bp, "-query", qp, "-gt", writeIvecs(t, "bad.ivecs", shifted), "-ef", "10") {
			if r.Recall > 0.5 {
				t.Fatalf("recall %v against a wrong ground truth", r.Recall)
			}
		}
	})
}

func TestExecuteErrors(t *testing.T) {
	base, queries := generate(genSpec{n: 50, dim: 4, clusters: 2, seed: 1}, 5)
	bp, qp := writeFvecs(t, "b.fvecs", base), writeFvecs(t, "q.fvecs", queries)
	other, _ := generate(genSpec{n: 5, dim: 6, clusters: 1, seed: 1}, 1)
	narrow, _ := exactGroundTruth(context.Background(), base, queries, 3, metricL2, 1)
	cases := []struct {
		name    string
		args    []string
		factory indexFactory
		wantErr string
	}{
		{"dimension mismatch", []string{"-base", bp, "-query", writeFvecs(t, "o.fvecs", other)}, newExact, "differs from query dimension"},
		{"ground truth narrower than k", []string{"-base", bp, "-query", qp, "-gt", writeIvecs(t, "n.ivecs", narrow), "-k", "4"}, newExact, "fewer than k=4"},
		{"ground truth of another query set", []string{"-base", bp, "-query", bp, "-gt", writeIvecs(t, "n.ivecs", narrow), "-k", "3"}, newExact, "5 rows for 50 queries"},
		{"missing base", []string{"-base", bp + ".nope.fvecs", "-query", qp}, newExact, "load base"},
		{"k above n", []string{"-gen", "5,2,1,1", "-k", "6"}, newExact, "exceeds the 5 base vectors"},
		{"index refuses", []string{"-gen", "20,2,1,1", "-nq", "2", "-k", "2"}, func(indexParams) (annIndex, error) { return nil, errors.New("bad M") }, "bad M"},
		{"add fails", []string{"-gen", "20,2,1,1", "-nq", "2", "-k", "2"}, func(p indexParams) (annIndex, error) {
			x, _ := newExact(p)
			return &failingIndex{annIndex: x, addsLeft: 7}, nil
		}, "disk on fire"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			c.minMeasure, c.newIndex = 0, tc.factory
			err = execute(context.Background(), c, newReporter(c, io.Discard))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestTableOutput(t *testing.T) {
	c, err := parseFlags([]string{"-gen", "300,8,3,2", "-nq", "20", "-ef", "10,20", "-threads", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c.minMeasure, c.newIndex = 0, newExact
	var out bytes.Buffer
	if err := execute(context.Background(), c, newReporter(c, &out)); err != nil {
		t.Fatal(err)
	}
	t.Logf("output:\n%s", out.String())
	var prefixes []string
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		prefixes = append(prefixes, f[0])
	}
	want := []string{"dataset", "300", "truth", "build", "search", "ef", "10", "20", "brute"}
	if !slices.Equal(prefixes, want) {
		t.Fatalf("line prefixes %v, want %v; output:\n%s", prefixes, want, out.String())
	}
	if s := out.String(); !strings.Contains(s, "recall@10") || !strings.Contains(s, "1-thread build") || !strings.Contains(s, " 1.0000 ") {
		t.Fatalf("table lacks recall header, build choice or exact recall:\n%s", s)
	}
}

// TestEndToEndHNSW runs the command's main logic on the real index: the JSON shape holds,
// the graph finds most true neighbours on an easy set, and the recall is the same on a
// second run, as the table promises for the 1-thread build.
func TestEndToEndHNSW(t *testing.T) {
	if raceEnabled {
		t.Skip("HNSW builds are slow under -race; this test runs in the non-race pass and shardserver/hnsw has its own race tests")
	}
	for _, m := range []string{"L2", "Cosine"} {
		t.Run(m, func(t *testing.T) {
			args := []string{"-gen", "1500,16,6,5", "-nq", "100", "-k", "10", "-m", "12", "-efc", "100",
				"-ef", "10,80", "-threads", "2", "-metric", m}
			rows := runJSON(t, newHNSW, args...)
			if r := rows[len(rows)-1]; r.Recall < 0.9 {
				t.Fatalf("recall@10 %v at ef=%d on 1500 vectors of dimension 16, want >= 0.9", r.Recall, r.Ef)
			}
			again := runJSON(t, newHNSW, args...)
			for i := range rows {
				if rows[i].Recall != again[i].Recall {
					t.Fatalf("ef=%d: recall %v then %v with the same seed", rows[i].Ef, rows[i].Recall, again[i].Recall)
				}
			}
		})
	}
}

// TestHNSWSearcherNoAllocs checks that the adapter keeps SearchInto allocation-free, so the
// timed loop measures the index and not the garbage collector.
func TestHNSWSearcherNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	base, queries := generate(genSpec{n: 500, dim: 16, clusters: 4, seed: 2}, 10)
	x, err := newHNSW(indexParams{dim: 16, metric: metricL2, m: 8, efConstruction: 50, efSearch: 20, seed: 2, capacity: 500})
	if err != nil {
		t.Fatal(err)
	}
	for i := range base.Len() {
		if err := x.Add(uint64(i), base.Row(i)); err != nil {
			t.Fatal(err)
		}
	}
	s := x.NewSearcher()
	keys := make([]uint64, 0, 10)
	if keys, err = s.Search(keys, queries.Row(0), 10, 40); err != nil || len(keys) != 10 {
		t.Fatalf("got %d keys, %v", len(keys), err)
	}
	i := 0
	if a := testing.AllocsPerRun(100, func() {
		keys, _ = s.Search(keys, queries.Row(i%queries.Len()), 10, 40)
		i++
	}); a != 0 {
		t.Fatalf("%v allocations per search, want 0", a)
	}
}

// runQuick runs the command's main logic on args, one pass per figure, and returns
// what it printed.
func runQuick(t *testing.T, args ...string) string {
	t.Helper()
	c, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c.minMeasure = 0
	var out bytes.Buffer
	if err := execute(context.Background(), c, newReporter(c, &out)); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestEndToEndQuant runs float32, int8 and int8 with re-ranking side by side: the JSON
// lines say which is which and carry the per-CPU-second rate, the int8 index is
// smaller, and re-ranking finds the true neighbours.
func TestEndToEndQuant(t *testing.T) {
	if raceEnabled {
		t.Skip("HNSW builds are slow under -race; shardserver/hnsw has its own race tests")
	}
	out := runQuick(t, "-gen", "1500,32,6,5", "-nq", "60", "-ef", "16,64", "-threads", "2", "-quant", "int8", "-rerank", "-json")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2+3*2+1 {
		t.Fatalf("got %d lines:\n%s", len(lines), out)
	}
	cpuKnown := cpuTime() > 0
	var bytesPer []float64
	for i, want := range []string{"float32", "int8"} {
		var b struct {
			Build struct {
				BytesPerVector float64 `json:"bytesPerVector"`
				Quant          string  `json:"quant"`
			} `json:"build"`
		}
		if err := json.Unmarshal([]byte(lines[i]), &b); err != nil || b.Build.Quant != want {
			t.Fatalf("build line %q: %v", lines[i], err)
		}
		bytesPer = append(bytesPer, b.Build.BytesPerVector)
	}
	if bytesPer[1] >= bytesPer[0] {
		t.Fatalf("int8 index %.0f bytes/vector, float32 %.0f", bytesPer[1], bytesPer[0])
	}
	want := []struct {
		quant  string
		rerank bool
		ef     int
	}{{"float32", false, 16}, {"float32", false, 64}, {"int8", false, 16}, {"int8", false, 64}, {"int8", true, 16}, {"int8", true, 64}}
	for i, w := range want {
		var r struct {
			Ef      int     `json:"ef"`
			Recall  float64 `json:"recall"`
			Quant   string  `json:"quant"`
			Rerank  bool    `json:"rerank"`
			QPS1CPU float64 `json:"qps1Cpu"`
		}
		line := lines[2+i]
		if err := json.Unmarshal([]byte(line), &r); err != nil || r.Quant != w.quant || r.Rerank != w.rerank || r.Ef != w.ef {
			t.Fatalf("line %q: %v, want %+v", line, err, w)
		}
		// The rate per CPU-second is there wherever the CPU time can be read (0 only
		// where cpuTime cannot, see cputime_other.go).
		if cpuKnown && r.QPS1CPU <= 0 {
			t.Fatalf("line %q: no queries per CPU-second", line)
		}
		if r.Ef == 64 && r.Recall < 0.9 {
			t.Fatalf("%s rerank=%v: recall@10 %v at ef=64", r.Quant, r.Rerank, r.Recall)
		}
	}
}

// TestEndToEndPartitions: -partitions reports every share at every ef, for float32 and
// int8, each search confined to its partition finds its true neighbours, and the
// planner scans the smallest share and walks the largest.
func TestEndToEndPartitions(t *testing.T) {
	if raceEnabled {
		t.Skip("HNSW builds are slow under -race; shardserver/hnsw has its own race tests")
	}
	out := runQuick(t, "-gen", "4000,16,8,5", "-nq", "50", "-ef", "32", "-threads", "2", "-quant", "int8", "-partitions", "-json")
	var rows []partitionReport
	for line := range strings.SplitSeq(strings.TrimSuffix(out, "\n"), "\n") {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if raw, ok := m["partition"]; ok {
			var r partitionReport
			if err := json.Unmarshal(raw, &r); err != nil {
				t.Fatal(err)
			}
			rows = append(rows, r)
		}
	}
	// 0.1 % of 4000 is 4 keys, fewer than k: that share is left out.
	if len(rows) != 2*3 {
		t.Fatalf("%d partition rows, want 6:\n%s", len(rows), out)
	}
	for _, r := range rows {
		if r.Recall < 0.95 || r.WalkRecall < 0.9 || r.QPS1 <= 0 || r.ScanQPS1 <= 0 || r.WalkQPS1 <= 0 || r.Keys < 10 {
			t.Fatalf("implausible row %+v", r)
		}
		if r.Share == 0.01 && r.Scanned != 1 {
			t.Fatalf("1 %% share (%d keys) not scanned: %+v", r.Keys, r)
		}
		if r.Share == 0.5 && r.Scanned != 0 {
			t.Fatalf("50 %% share scanned: %+v", r)
		}
	}
}
