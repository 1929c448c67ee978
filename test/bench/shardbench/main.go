// Command shardbench measures a real `shardserver serve` process over loopback: upsert
// throughput with --wal-sync Always and Interval, and search QPS with p50/p99 latency at
// concurrency 1 and 16, next to the in-process HNSW QPS of one core on the same data and
// queries. The headline is the ratio server QPS at concurrency 16 / in-process QPS of
// one core: the goal is >= 0.70 (HTTP, JSON and scheduling cost at most 30%).
//
// Usage: go run ./test/bench/shardbench [-n 20000 -dim 128 -duration 5s -json]
//
// Everything runs on this machine (127.0.0.1); the server and the load generator share
// its cores, which is part of what the ratio measures. -json prints one object per line.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/proctest"
	"github.com/annshard/annshard/test/bench/internal/benchkit"
)

type options struct {
	n, dim, queries, k, ef, m, efc int
	batch, writers                 int
	duration                       time.Duration
	bin                            string
	json                           bool
	seed                           uint64
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 20000, "vectors to load")
	flag.IntVar(&o.dim, "dim", 128, "dimension")
	flag.IntVar(&o.queries, "queries", 1000, "distinct query vectors (cycled)")
	flag.IntVar(&o.k, "k", 10, "k of each search")
	flag.IntVar(&o.ef, "ef", 64, "ef of each search")
	flag.IntVar(&o.m, "m", 16, "HNSW M")
	flag.IntVar(&o.efc, "efc", 200, "HNSW efConstruction")
	flag.IntVar(&o.batch, "batch", 100, "vectors per upsert request")
	flag.IntVar(&o.writers, "writers", 8, "concurrent upsert clients")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measuring time of each search run")
	flag.StringVar(&o.bin, "bin", "", "shardserver binary (default: go build one)")
	flag.BoolVar(&o.json, "json", false, "print one JSON object per result line")
	flag.Uint64Var(&o.seed, "seed", 1, "data seed")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "shardbench:", err)
		os.Exit(1)
	}
}

// result is one line of output.
type result struct {
	Name        string  `json:"name"`
	WALSync     string  `json:"walSync,omitempty"`
	Concurrency int     `json:"concurrency,omitempty"`
	VectorsPerS float64 `json:"vectorsPerSecond,omitempty"`
	QPS         float64 `json:"qps,omitempty"`
	P50Ms       float64 `json:"p50Ms,omitempty"`
	P99Ms       float64 `json:"p99Ms,omitempty"`
	Ratio       float64 `json:"ratio,omitempty"`
	Note        string  `json:"note,omitempty"`
}

func (o options) print(r result) {
	if o.json {
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
		return
	}
	switch {
	case r.VectorsPerS > 0:
		fmt.Printf("%-28s %-9s %12.0f vectors/s\n", r.Name, r.WALSync, r.VectorsPerS)
	case r.Ratio > 0:
		fmt.Printf("%-28s %-9s %12.2f  %s\n", r.Name, "", r.Ratio, r.Note)
	default:
		fmt.Printf("%-28s c=%-7d %12.0f QPS   p50 %6.3f ms   p99 %6.3f ms\n", r.Name, r.Concurrency, r.QPS, r.P50Ms, r.P99Ms)
	}
}

func run(ctx context.Context, o options) error {
	r := rand.New(rand.NewPCG(o.seed, 7))
	data := benchkit.Clustered(r, o.n, o.dim)
	queries := benchkit.Clustered(r, o.queries, o.dim)
	bin := o.bin
	if bin == "" {
		dir, err := os.MkdirTemp("", "shardbench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if bin, err = proctest.Build(dir); err != nil {
			return err
		}
	}
	if !o.json {
		fmt.Printf("shardbench: %d vectors, dim %d, M %d, efc %d, k %d, ef %d, GOMAXPROCS %d\n",
			o.n, o.dim, o.m, o.efc, o.k, o.ef, runtime.GOMAXPROCS(0))
	}

	var srv *server
	for _, mode := range []string{"Always", "Interval"} {
		s, err := startServer(ctx, bin, o, mode)
		if err != nil {
			return err
		}
		vps, err := upsertAll(ctx, s.client, data, o)
		if err != nil {
			s.stop()
			return err
		}
		o.print(result{Name: "upsert", WALSync: mode, VectorsPerS: vps})
		if mode == "Interval" {
			srv = s
		} else {
			s.stop()
		}
	}
	defer srv.stop()

	bodies := make([][]byte, len(queries))
	for i, q := range queries {
		bodies[i], _ = json.Marshal(client.SearchRequest{VectorB64: client.EncodeB64(q), K: o.k, Ef: o.ef})
	}
	idx, err := hnsw.New(hnsw.Config{Dim: o.dim, Metric: hnsw.L2, M: o.m, EfConstruction: o.efc, EfSearch: o.ef, Seed: 1, Capacity: o.n})
	if err != nil {
		return err
	}
	buildStart := time.Now()
	if err := addParallel(idx, data); err != nil {
		return err
	}
	o.print(result{Name: "insert in-process (reference)", WALSync: "none", VectorsPerS: float64(len(data)) / time.Since(buildStart).Seconds()})
	// The machine is shared, so its background load drifts: the three measurements take
	// turns in short slices and each adds up its slices, so all see the same conditions.
	const rounds = 5
	slice := o.duration / rounds
	// Batches of 16 queries, the router's micro-batching shape: 4 requests in flight.
	const perBatch = 16
	batchBodies := make([][]byte, 0, len(queries)/perBatch+1)
	for i := 0; i < len(queries); i += perBatch {
		var req client.BatchSearchRequest
		for _, q := range queries[i:min(i+perBatch, len(queries))] {
			req.Queries = append(req.Queries, client.SearchRequest{VectorB64: client.EncodeB64(q), K: o.k, Ef: o.ef})
		}
		b, _ := json.Marshal(req)
		batchBodies = append(batchBodies, b)
	}
	var http1, http16, batch4, inproc tally
	for range rounds {
		if err := srv.measure(ctx, &batch4, func() error {
			return searchHTTP(ctx, srv.url+"/v1/search:batch", batchBodies, 4, slice, &batch4)
		}); err != nil {
			return err
		}
		if err := srv.measure(ctx, &http1, func() error {
			return searchHTTP(ctx, srv.url+"/v1/search", bodies, 1, slice, &http1)
		}); err != nil {
			return err
		}
		if err := srv.measure(ctx, &http16, func() error {
			return searchHTTP(ctx, srv.url+"/v1/search", bodies, 16, slice, &http16)
		}); err != nil {
			return err
		}
		cpu0 := benchkit.SelfCPU()
		if err := searchInProcess(idx, queries, o, slice, &inproc); err != nil {
			return err
		}
		inproc.cpu += benchkit.SelfCPU() - cpu0
	}
	for _, m := range []struct {
		name string
		c    int
		t    *tally
	}{{"search http (vector_b64)", 1, &http1}, {"search http (vector_b64)", 16, &http16}, {"search in-process, 1 core", 1, &inproc}} {
		p50, p99 := percentiles(m.t.lats)
		o.print(result{Name: m.name, Concurrency: m.c, QPS: m.t.qps(), P50Ms: p50, P99Ms: p99})
	}
	// A batch request counts its queries.
	p50, p99 := percentiles(batch4.lats)
	o.print(result{Name: fmt.Sprintf("search:batch http (%d/req)", perBatch), Concurrency: 4,
		QPS: perBatch * batch4.qps(), P50Ms: p50, P99Ms: p99, Note: "latency per batch"})
	o.print(result{Name: "ratio server c=16 / in-proc", Ratio: http16.qps() / inproc.qps(), Note: "goal >= 0.70"})
	o.print(result{Name: "ratio batch c=4 / in-proc", Ratio: perBatch * batch4.qps() / inproc.qps()})
	// Queries per CPU-second do not depend on what else the machine runs: this ratio is
	// the share of the server's CPU that goes to the search itself.
	o.print(result{Name: "ratio per CPU-second", Ratio: http16.perCPU() / inproc.perCPU(),
		Note: fmt.Sprintf("server %.0f, in-process %.0f queries per CPU-second", http16.perCPU(), inproc.perCPU())})
	return nil
}

// measure runs f and adds the server's CPU seconds meanwhile (from its load report) to t.
func (s *server) measure(ctx context.Context, t *tally, f func() error) error {
	before, err := s.client.Load(ctx)
	if err != nil {
		return err
	}
	if err := f(); err != nil {
		return err
	}
	after, err := s.client.Load(ctx)
	if err != nil {
		return err
	}
	t.cpu += after.CPUSeconds - before.CPUSeconds
	return nil
}

// tally adds up the queries, time and latencies of several measuring slices.
type tally struct {
	lats    []time.Duration
	elapsed time.Duration
	cpu     float64 // CPU seconds of the process that ran the searches
}

func (t *tally) qps() float64    { return float64(len(t.lats)) / t.elapsed.Seconds() }
func (t *tally) perCPU() float64 { return float64(len(t.lats)) / t.cpu }

type server struct {
	proc   *proctest.Process
	url    string
	dir    string
	client *client.Client
}

// startServer starts a server with its data and log in a new temporary directory and
// waits until it is ready.
func startServer(ctx context.Context, bin string, o options, mode string) (*server, error) {
	dir, err := os.MkdirTemp("", "shardbench-data")
	if err != nil {
		return nil, err
	}
	p, err := proctest.Start(ctx, proctest.Spec{Bin: bin, Role: "serve", LogPath: filepath.Join(dir, "server.log"),
		Args: []string{"--data-dir", filepath.Join(dir, "data"), "--dimension", strconv.Itoa(o.dim),
			"--m", strconv.Itoa(o.m), "--ef-construction", strconv.Itoa(o.efc), "--ef-search", strconv.Itoa(o.ef),
			"--wal-sync", mode, "--snapshot-interval", "1h", "--snapshot-records", "1000000000"}})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &server{proc: p, url: p.URL(), dir: dir, client: client.New(p.URL())}
	deadline := time.Now().Add(20 * time.Second)
	for s.client.Ready(ctx) != nil {
		if time.Now().After(deadline) {
			s.stop()
			return nil, errors.New("server did not become ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, nil
}

func (s *server) stop() {
	if s.proc == nil {
		return
	}
	_ = s.proc.Stop(30 * time.Second)
	s.proc = nil
	os.RemoveAll(s.dir)
}

func upsertAll(ctx context.Context, c *client.Client, data [][]float32, o options) (float64, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, o.writers)
	start := time.Now()
	for range o.writers {
		wg.Go(func() {
			for {
				from := int(next.Add(int64(o.batch))) - o.batch
				if from >= len(data) {
					return
				}
				req := &client.UpsertRequest{}
				for i := from; i < min(from+o.batch, len(data)); i++ {
					req.Vectors = append(req.Vectors, client.Vector{ID: strconv.Itoa(i), VectorB64: client.EncodeB64(data[i])})
				}
				if _, err := c.Upsert(ctx, req); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		return 0, fmt.Errorf("upsert: %w", err)
	default:
	}
	return float64(len(data)) / time.Since(start).Seconds(), nil
}

// searchHTTP sends searches from c clients back to back for d and adds them to t. Any
// failed search fails the run.
func searchHTTP(ctx context.Context, url string, bodies [][]byte, c int, d time.Duration, t *tally) error {
	start := time.Now()
	lats, err := benchkit.SearchHTTP(ctx, url, bodies, c, d)
	t.elapsed += time.Since(start)
	if err != nil {
		return err
	}
	t.lats = append(t.lats, lats...)
	return nil
}

// percentiles is benchkit.Percentiles, NaN for no latencies (printed as such).
func percentiles(xs []time.Duration) (float64, float64) {
	p50, p99, ok := benchkit.Percentiles(xs)
	if !ok {
		return math.NaN(), math.NaN()
	}
	return p50, p99
}

func addParallel(idx *hnsw.Index, data [][]float32) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(data); i = int(next.Add(1)) - 1 {
				if err := idx.Add(uint64(i), data[i]); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	err, _ := failed.Load().(error)
	return err
}

// searchInProcess runs the queries on one goroutine (one core) for d and adds them to t.
func searchInProcess(idx *hnsw.Index, queries [][]float32, o options, d time.Duration, t *tally) error {
	buf := make([]hnsw.Result, 0, o.k)
	start := time.Now()
	stopAt := start.Add(d)
	for i := len(t.lats); time.Now().Before(stopAt); i++ {
		t0 := time.Now()
		var err error
		if buf, err = idx.SearchInto(buf[:0], queries[i%len(queries)], o.k, hnsw.SearchOptions{Ef: o.ef}); err != nil {
			return err
		}
		t.lats = append(t.lats, time.Since(t0))
	}
	t.elapsed += time.Since(start)
	return nil
}
