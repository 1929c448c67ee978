package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sync/errgroup"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/proctest"
	"github.com/annshard/annshard/shardserver/slots"
	"github.com/annshard/annshard/test/bench/internal/benchkit"
)

const (
	numShards   = 2
	numReplicas = 2
	token       = "bench-e2e-token"
)

type bench struct {
	o          options
	debugAddrs map[string]string // process name -> its --debug-listen address, with -profile
	// The in-process paths: the whole data in one index, and split as the router splits it.
	whole, split []*hnsw.Index
	log          io.Writer
	dir          string
	bin          string
	shards       [numShards][numReplicas]*proctest.Process
	router       *proctest.Process
	data         [][]float32
	queries      [][]float32
}

// run starts the processes, measures, stops them and returns the records; progress goes
// to log.
func run(ctx context.Context, o options, log io.Writer) ([]record, error) {
	if o.n < numShards || o.queries < 1 || o.k < 1 || o.rounds < 1 || len(o.concurrency) == 0 {
		return nil, fmt.Errorf("need -n >= %d, -queries, -k, -rounds >= 1 and a -concurrency", numShards)
	}
	dir, err := os.MkdirTemp("", "e2ebench")
	if err != nil {
		return nil, err
	}
	if o.keep {
		fmt.Fprintf(log, "# work directory (kept): %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return nil, err
		}
	}
	b := &bench{o: o, log: log, dir: dir, bin: o.bin}
	defer b.stopAll()
	r := rand.New(rand.NewPCG(o.seed, 7))
	b.data = benchkit.Clustered(r, o.n, o.dim)
	b.queries = benchkit.Clustered(r, o.queries, o.dim)

	l1, l5 := benchkit.LoadAverage()
	recs := []record{
		{Kind: kindConfig, Vectors: o.n, Dim: o.dim, K: o.k, Ef: o.ef, Shards: numShards, Replicas: numReplicas, WALSync: o.walSync, GOMAXPROCS: runtime.GOMAXPROCS(0), ServerProcs: o.serverProcs},
		{Kind: kindLoad, When: "start", Load1: l1, Load5: l5},
	}
	if b.bin == "" {
		b.logf("building shardserver")
		if b.bin, err = proctest.Build(dir); err != nil {
			return nil, err
		}
	}
	if err := b.start(ctx); err != nil {
		return nil, err
	}

	acked, replicated, err := b.upsertThroughRouter(ctx)
	if err != nil {
		return nil, err
	}
	idx, buildRate, err := b.buildInProcess()
	if err != nil {
		return nil, err
	}
	b.whole = []*hnsw.Index{idx}
	if b.split, err = b.buildSplit(); err != nil {
		return nil, err
	}
	recs = append(recs,
		record{Kind: kindUpsert, Path: pathRouter, VectorsPerSecond: acked, ReplicatedVectorsPerSecond: replicated},
		record{Kind: kindUpsert, Path: pathInproc, VectorsPerSecond: buildRate},
	)

	rr, ir, sr, err := b.recall(ctx)
	if err != nil {
		return nil, err
	}
	recs = append(recs, record{Kind: kindRecall, Path: pathRouter, Recall: rr}, record{Kind: kindRecall, Path: pathInproc, Recall: ir},
		record{Kind: kindRecall, Path: pathSplit, Recall: sr})

	search, err := b.searchAll(ctx)
	if err != nil {
		return nil, err
	}
	recs = append(recs, search...)
	recs = append(recs, record{Kind: kindRatio, Of: pathRouter + "/" + pathInproc, Metric: "vectorsPerSecond", Ratio: acked / buildRate})
	l1, l5 = benchkit.LoadAverage()
	recs = append(recs, record{Kind: kindLoad, When: "end", Load1: l1, Load5: l5})
	return recs, nil
}

func (b *bench) logf(format string, args ...any) { fmt.Fprintf(b.log, "# "+format+"\n", args...) }

// start starts the shard processes (primary first, then its replica) and the router.
func (b *bench) start(ctx context.Context) error {
	tokenFile := filepath.Join(b.dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		return err
	}
	var spec []string
	for k := range numShards {
		var urls []string
		for r := range numReplicas {
			args := []string{"--data-dir", filepath.Join(b.dir, fmt.Sprintf("s%d-%d", k, r)), "--dimension", strconv.Itoa(b.o.dim),
				"--token-file", tokenFile, "--wal-sync", b.o.walSync, "--m", strconv.Itoa(b.o.m),
				"--ef-construction", strconv.Itoa(b.o.efc), "--ef-search", strconv.Itoa(b.o.ef)}
			if r > 0 {
				args = append(args, "--primary", b.shards[k][0].URL())
			}
			args, err := b.debugArgs(fmt.Sprintf("shard%d-%d", k, r), args)
			if err != nil {
				return err
			}
			p, err := proctest.Start(ctx, proctest.Spec{Bin: b.bin, Role: "serve", Args: args, Env: b.env(),
				LogPath: filepath.Join(b.dir, fmt.Sprintf("s%d-%d.log", k, r)), StartTimeout: 30 * time.Second})
			if err != nil {
				return err
			}
			b.shards[k][r] = p
			urls = append(urls, p.URL())
		}
		spec = append(spec, fmt.Sprintf("%d=%s", k, strings.Join(urls, ",")))
	}
	// The queries repeat, so the result cache would answer most of them: off. Everything
	// else is the router's default.
	args, err := b.debugArgs("router", []string{"--shards", strings.Join(spec, ";"), "--cache-entries", "0"})
	if err != nil {
		return err
	}
	p, err := proctest.Start(ctx, proctest.Spec{Bin: b.bin, Role: "route", Env: append(b.env(), "ANNSHARD_TOKEN="+token),
		Args:    args,
		LogPath: filepath.Join(b.dir, "router.log"), StartTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	b.router = p
	b.logf("started %d shards x %d replicas and a router (pid %d)", numShards, numReplicas, p.Pid())
	// The router is ready once it has the shards' schema and every shard has a replica.
	deadline := time.Now().Add(30 * time.Second)
	rc := client.New(p.URL())
	for rc.Ready(ctx) != nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("router not ready after 30s\n%s", p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// debugArgs adds --debug-listen on a free loopback address to a server's args when
// profiling, and remembers the address under name.
func (b *bench) debugArgs(name string, args []string) ([]string, error) {
	if b.o.profile == "" {
		return args, nil
	}
	addr, err := proctest.FreeAddr()
	if err != nil {
		return nil, err
	}
	if b.debugAddrs == nil {
		b.debugAddrs = map[string]string{}
	}
	b.debugAddrs[name] = addr
	return append(args, "--debug-listen", addr), nil
}

// env is the environment added to every server process.
func (b *bench) env() []string {
	if b.o.serverProcs > 0 {
		return []string{"GOMAXPROCS=" + strconv.Itoa(b.o.serverProcs)}
	}
	return nil
}

func (b *bench) stopAll() {
	if b.router != nil {
		_ = b.router.Stop(10 * time.Second)
	}
	for k := range b.shards {
		for _, p := range b.shards[k] {
			if p != nil {
				_ = p.Stop(30 * time.Second)
			}
		}
	}
}

// servers are every server process, router first.
func (b *bench) servers() []*proctest.Process {
	out := []*proctest.Process{b.router}
	for k := range b.shards {
		out = append(out, b.shards[k][:]...)
	}
	return out
}

// upsertThroughRouter loads the data through the router from -writers clients and
// returns the acknowledged rate and the rate until every replica holds the data. It
// checks that the primaries hold exactly n vectors: no write lost, none doubled.
func (b *bench) upsertThroughRouter(ctx context.Context) (acked, replicated float64, err error) {
	c := client.New(b.router.URL(), client.WithToken(token), client.WithHTTPClient(benchkit.HTTPClient(b.o.writers)))
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	var retries atomic.Int64
	start := time.Now()
	for range b.o.writers {
		wg.Go(func() {
			for {
				from := int(next.Add(int64(b.o.batch))) - b.o.batch
				if from >= len(b.data) || failed.Load() != nil {
					return
				}
				req := &client.UpsertRequest{}
				for i := from; i < min(from+b.o.batch, len(b.data)); i++ {
					req.Vectors = append(req.Vectors, client.Vector{ID: strconv.Itoa(i), VectorB64: client.EncodeB64(b.data[i])})
				}
				if err := upsertRetrying(ctx, c, req, &retries); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return 0, 0, fmt.Errorf("upsert through the router: %w", err)
	}
	acked = float64(len(b.data)) / time.Since(start).Seconds()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		total, caughtUp, err := b.replicationState(ctx)
		if err != nil {
			return 0, 0, err
		}
		if total > len(b.data) {
			return 0, 0, fmt.Errorf("the primaries hold %d vectors, %d were written", total, len(b.data))
		}
		if total == len(b.data) && caughtUp {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("after 5 minutes the primaries hold %d of %d vectors (replicas caught up: %v)", total, len(b.data), caughtUp)
		}
		time.Sleep(20 * time.Millisecond)
	}
	replicated = float64(len(b.data)) / time.Since(start).Seconds()
	b.logf("loaded %d vectors through the router: %.0f/s acknowledged, %.0f/s replicated (%d batches retried after an unavailable answer)",
		len(b.data), acked, replicated, retries.Load())
	return acked, replicated, nil
}

// upsertAttempts bounds upsertRetrying.
const upsertAttempts = 6

// upsertRetrying upserts req, retrying with backoff while the router answers
// unavailable (an overloaded machine can take longer than the router's deadline), as a
// client such as kubectl annshard import does. An upsert is idempotent: a retried batch
// that had been applied replaces its vectors with themselves.
func upsertRetrying(ctx context.Context, c *client.Client, req *client.UpsertRequest, retries *atomic.Int64) error {
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		_, err := c.Upsert(ctx, req)
		if err == nil || !client.IsCode(err, client.CodeUnavailable) || attempt == upsertAttempts {
			return err
		}
		retries.Add(1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// replicationState sums the primaries' vectors and says whether every replica holds
// as many as its primary and is ready.
func (b *bench) replicationState(ctx context.Context) (int, bool, error) {
	total, caughtUp := 0, true
	for k := range b.shards {
		want := 0
		for r, p := range b.shards[k] {
			lr, err := client.New(p.URL()).Load(ctx)
			if err != nil {
				return 0, false, fmt.Errorf("load report of shard %d replica %d: %w", k, r, err)
			}
			if r == 0 {
				want = lr.Vectors
				total += want
			} else if lr.Vectors != want || !lr.Ready || lr.Unindexed > 0 {
				caughtUp = false
			}
		}
	}
	return total, caughtUp, nil
}

// buildInProcess builds one index of all the data with GOMAXPROCS goroutines.
func (b *bench) buildInProcess() (*hnsw.Index, float64, error) {
	start := time.Now()
	idx, err := b.build(b.data, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("in-process build: %w", err)
	}
	rate := float64(len(b.data)) / time.Since(start).Seconds()
	b.logf("built the in-process index: %.0f vectors/s with %d goroutines", rate, runtime.GOMAXPROCS(0))
	return idx, rate, nil
}

// buildSplit builds numShards in-process indexes holding the vectors the router's slot
// table (slots.Even, as the router has without a table source) gives each shard, keyed
// by their number in the data.
func (b *bench) buildSplit() ([]*hnsw.Index, error) {
	table := slots.Even(numShards)
	parts := make([][]int, numShards)
	for i := range b.data {
		k := table.ShardOfKey(slots.KeyOf(strconv.Itoa(i), ""))
		parts[k] = append(parts[k], i)
	}
	out := make([]*hnsw.Index, numShards)
	for k, keys := range parts {
		var err error
		if out[k], err = b.build(b.data, keys); err != nil {
			return nil, fmt.Errorf("in-process build of part %d: %w", k, err)
		}
	}
	b.logf("built %d in-process indexes split as the router splits the data: %d and %d vectors", numShards, len(parts[0]), len(parts[1]))
	return out, nil
}

// build adds data[i] under key i for every i of keys (all of data when keys is nil) with
// GOMAXPROCS goroutines.
func (b *bench) build(data [][]float32, keys []int) (*hnsw.Index, error) {
	n := len(data)
	if keys != nil {
		n = len(keys)
	}
	idx, err := hnsw.New(hnsw.Config{Dim: b.o.dim, Metric: hnsw.L2, M: b.o.m, EfConstruction: b.o.efc, EfSearch: b.o.ef, Seed: 1, Capacity: n})
	if err != nil {
		return nil, err
	}
	var next atomic.Int64
	var g errgroup.Group
	for range runtime.GOMAXPROCS(0) {
		g.Go(func() error {
			for j := int(next.Add(1)) - 1; j < n; j = int(next.Add(1)) - 1 {
				i := j
				if keys != nil {
					i = keys[j]
				}
				if err := idx.Add(uint64(i), data[i]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return idx, g.Wait()
}

// searchIndexes searches every index of idxs for q and merges the top k into buf (a
// single index's results are its own, already in order).
func searchIndexes(idxs []*hnsw.Index, buf, part []hnsw.Result, q []float32, o options) ([]hnsw.Result, []hnsw.Result, error) {
	if len(idxs) == 1 {
		buf, err := idxs[0].SearchInto(buf[:0], q, o.k, hnsw.SearchOptions{Ef: o.ef})
		return buf, part, err
	}
	buf = buf[:0]
	for _, idx := range idxs {
		var err error
		if part, err = idx.SearchInto(part[:0], q, o.k, hnsw.SearchOptions{Ef: o.ef}); err != nil {
			return buf, part, err
		}
		buf = append(buf, part...)
	}
	slices.SortFunc(buf, func(a, b hnsw.Result) int { return cmp.Compare(a.Distance, b.Distance) })
	return buf[:min(len(buf), o.k)], part, nil
}

// recall is the mean recall@k through the router, in-process and over the split
// in-process indexes, over the first -recall-queries queries, against exact neighbours.
func (b *bench) recall(ctx context.Context) (router, inproc, splitRecall float64, err error) {
	nq := min(b.o.recallQueries, len(b.queries))
	if nq == 0 {
		return 0, 0, 0, nil
	}
	c := client.New(b.router.URL())
	var hitR, hitI, hitS, total int
	var buf, part []hnsw.Result
	for _, q := range b.queries[:nq] {
		truth := exact(b.data, q, b.o.k)
		total += len(truth)
		resp, err := c.Search(ctx, &client.SearchRequest{VectorB64: client.EncodeB64(q), K: b.o.k, Ef: b.o.ef})
		if err != nil {
			return 0, 0, 0, fmt.Errorf("recall search through the router: %w", err)
		}
		if resp.Partial {
			return 0, 0, 0, fmt.Errorf("partial answer from the router: missing shards %v", resp.MissingShards)
		}
		for _, h := range resp.Results {
			i, err := strconv.Atoi(h.ID)
			if err != nil {
				return 0, 0, 0, fmt.Errorf("router answered an id %q that was never written", h.ID)
			}
			if _, ok := truth[i]; ok {
				hitR++
			}
		}
		if buf, part, err = searchIndexes(b.whole, buf, part, q, b.o); err != nil {
			return 0, 0, 0, err
		}
		hitI += hits(truth, buf)
		if buf, part, err = searchIndexes(b.split, buf, part, q, b.o); err != nil {
			return 0, 0, 0, err
		}
		hitS += hits(truth, buf)
	}
	router, inproc, splitRecall = float64(hitR)/float64(total), float64(hitI)/float64(total), float64(hitS)/float64(total)
	b.logf("recall@%d over %d queries: router %.4f, in-process %.4f, split in-process %.4f", b.o.k, nq, router, inproc, splitRecall)
	return router, inproc, splitRecall, nil
}

// hits counts the results that are among the true neighbours.
func hits(truth map[int]struct{}, res []hnsw.Result) int {
	n := 0
	for _, h := range res {
		if _, ok := truth[int(h.Key)]; ok {
			n++
		}
	}
	return n
}

// exact returns the indexes of the k nearest vectors to q by L2.
func exact(data [][]float32, q []float32, k int) map[int]struct{} {
	type cand struct {
		i int
		d float32
	}
	best := make([]cand, 0, k+1)
	for i, v := range data {
		var d float32
		for j := range v {
			x := v[j] - q[j]
			d += x * x
		}
		if len(best) == k && d >= best[k-1].d {
			continue
		}
		pos, _ := slices.BinarySearchFunc(best, d, func(c cand, d float32) int {
			if c.d <= d {
				return -1
			}
			return 1
		})
		best = slices.Insert(best, pos, cand{i, d})
		if len(best) > k {
			best = best[:k]
		}
	}
	out := make(map[int]struct{}, len(best))
	for _, c := range best {
		out[c.i] = struct{}{}
	}
	return out
}

// tally adds up one path's slices at one concurrency.
type tally struct {
	lats    []time.Duration
	elapsed time.Duration
	cpu     float64 // CPU seconds of the processes that served the searches
	// CPU seconds of the router process and of the shard processes (HTTP paths).
	routerCPU, shardsCPU float64
	// Requests the router sent to shard replicas for searches, and the searches they
	// carried (micro-batches carry several).
	shardRequests, shardSearches float64
}

func (t *tally) qps() float64 { return float64(len(t.lats)) / t.elapsed.Seconds() }

// searchAll measures the four paths at each concurrency, taking turns in short slices.
func (b *bench) searchAll(ctx context.Context) ([]record, error) {
	bodies := make([][]byte, len(b.queries))
	for i, q := range b.queries {
		bodies[i], _ = json.Marshal(client.SearchRequest{VectorB64: client.EncodeB64(q), K: b.o.k, Ef: b.o.ef})
	}
	paths := []string{pathRouter, pathShard, pathInproc, pathSplit}
	slice := b.o.duration / time.Duration(b.o.rounds)
	tallies := map[string]map[int]*tally{}
	for _, p := range paths {
		tallies[p] = map[int]*tally{}
		for _, c := range b.o.concurrency {
			tallies[p][c] = &tally{}
		}
	}
	for round := range b.o.rounds {
		b.logf("search round %d of %d: %d paths x %d concurrencies, %v each", round+1, b.o.rounds, len(paths), len(b.o.concurrency), slice)
		for _, c := range b.o.concurrency {
			for i := range paths {
				p := paths[(i+round)%len(paths)] // who goes first rotates
				warm := time.Duration(0)
				if round == 0 {
					warm = b.o.warmup
				}
				profile := b.o.profile != "" && round == 0 && p == pathRouter && c == slices.Max(b.o.concurrency)
				if err := b.measure(ctx, p, c, bodies, warm, slice, profile, tallies[p][c]); err != nil {
					return nil, fmt.Errorf("%s, %d clients: %w", p, c, err)
				}
			}
		}
	}
	var recs, ratios []record
	for _, c := range b.o.concurrency {
		for _, p := range paths {
			t := tallies[p][c]
			p50, p99, _ := benchkit.Percentiles(t.lats)
			us := func(cpu float64) float64 { return cpu * 1e6 / float64(len(t.lats)) }
			recs = append(recs, record{Kind: kindSearch, Path: p, Concurrency: c, Queries: len(t.lats), QPS: t.qps(),
				P50Ms: p50, P99Ms: p99, QueriesPerCPUSecond: float64(len(t.lats)) / t.cpu,
				RouterCPUMicros: us(t.routerCPU), ShardsCPUMicros: us(t.shardsCPU)})
			if p == pathRouter && t.shardRequests > 0 {
				r := &recs[len(recs)-1]
				r.ShardRequestsPerQuery = t.shardRequests / float64(len(t.lats))
				r.SearchesPerShardRequest = t.shardSearches / t.shardRequests
			}
		}
		router, shard, inproc, splitRec := recs[len(recs)-4], recs[len(recs)-3], recs[len(recs)-2], recs[len(recs)-1]
		goal := ""
		if c == slices.Max(b.o.concurrency) {
			goal = ">= 0.5"
		}
		ratios = append(ratios,
			record{Kind: kindRatio, Of: pathRouter + "/" + pathInproc, Metric: "qps", Concurrency: c, Ratio: router.QPS / inproc.QPS, Goal: goal},
			record{Kind: kindRatio, Of: pathRouter + "/" + pathInproc, Metric: "queriesPerCPUSecond", Concurrency: c, Ratio: router.QueriesPerCPUSecond / inproc.QueriesPerCPUSecond},
			record{Kind: kindRatio, Of: pathRouter + "/" + pathShard, Metric: "qps", Concurrency: c, Ratio: router.QPS / shard.QPS},
			record{Kind: kindRatio, Of: pathRouter + "/" + pathShard, Metric: "p50Ms", Concurrency: c, Ratio: router.P50Ms / shard.P50Ms},
			// Sharding's own cost (split/inproc) and the protocol's (router/split): their
			// product is router/inproc.
			record{Kind: kindRatio, Of: pathSplit + "/" + pathInproc, Metric: "qps", Concurrency: c, Ratio: splitRec.QPS / inproc.QPS},
			record{Kind: kindRatio, Of: pathRouter + "/" + pathSplit, Metric: "qps", Concurrency: c, Ratio: router.QPS / splitRec.QPS},
			record{Kind: kindRatio, Of: pathRouter + "/" + pathSplit, Metric: "queriesPerCPUSecond", Concurrency: c, Ratio: router.QueriesPerCPUSecond / splitRec.QueriesPerCPUSecond},
		)
	}
	return append(recs, ratios...), nil
}

// measure runs one slice of path p with c clients (after an unmeasured warm-up) and adds
// it, with the CPU time of whoever served it, to t.
func (b *bench) measure(ctx context.Context, p string, c int, bodies [][]byte, warm, d time.Duration, profile bool, t *tally) error {
	var f func(d time.Duration) ([]time.Duration, error)
	var cpu func() (float64, error)
	var cpuSplit func() (router, shards float64, err error)
	switch p {
	case pathRouter, pathShard:
		url := b.router.URL()
		if p == pathShard {
			url = b.shards[0][0].URL()
		}
		f = func(d time.Duration) ([]time.Duration, error) {
			return benchkit.SearchHTTP(ctx, url+"/v1/search", bodies, c, d)
		}
		cpuSplit = func() (float64, float64, error) {
			r, err := processesCPU(b.servers()[:1])
			if err != nil {
				return 0, 0, err
			}
			s, err := processesCPU(b.servers()[1:])
			return r, s, err
		}
		cpu = func() (float64, error) { r, s, err := cpuSplit(); return r + s, err }
	case pathInproc, pathSplit:
		idxs := b.whole
		if p == pathSplit {
			idxs = b.split
		}
		f = func(d time.Duration) ([]time.Duration, error) { return searchInProcess(idxs, b.queries, b.o, c, d) }
		cpu = func() (float64, error) { return benchkit.SelfCPU(), nil }
	}
	if warm > 0 {
		if _, err := f(warm); err != nil {
			return err
		}
	}
	var batch0 histogram
	if p == pathRouter {
		var err error
		if batch0, err = b.batchSizes(ctx); err != nil {
			return err
		}
	}
	var r0, s0 float64
	if cpuSplit != nil {
		var err error
		if r0, s0, err = cpuSplit(); err != nil {
			return err
		}
	}
	cpu0, err := cpu()
	if err != nil {
		return err
	}
	var profiles errgroup.Group
	if profile {
		b.profileServers(ctx, &profiles, d)
	}
	start := time.Now()
	lats, err := f(d)
	elapsed := time.Since(start)
	if err := errors.Join(err, profiles.Wait()); err != nil {
		return err
	}
	t.elapsed += elapsed
	cpu1, err := cpu()
	if err != nil {
		return err
	}
	t.cpu += cpu1 - cpu0
	if cpuSplit != nil {
		r1, s1, err := cpuSplit()
		if err != nil {
			return err
		}
		t.routerCPU += r1 - r0
		t.shardsCPU += s1 - s0
	}
	if p == pathRouter {
		batch1, err := b.batchSizes(ctx)
		if err != nil {
			return err
		}
		t.shardRequests += batch1.count - batch0.count
		t.shardSearches += batch1.sum - batch0.sum
	}
	t.lats = append(t.lats, lats...)
	return nil
}

// profileServers fetches a CPU profile of d (whole seconds, at least 1) from the router
// and from every shard process into -profile, each on its own goroutine of g.
func (b *bench) profileServers(ctx context.Context, g *errgroup.Group, d time.Duration) {
	secs := max(1, int(d/time.Second))
	fetch := func(name, addr string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("profile of %s: %w", name, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("profile of %s: %s", name, resp.Status)
		}
		f, err := os.Create(filepath.Join(b.o.profile, name+".pprof"))
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			f.Close()
			return fmt.Errorf("profile of %s: %w", name, err)
		}
		return f.Close()
	}
	for name, addr := range b.debugAddrs {
		g.Go(func() error { return fetch(name, addr) })
	}
	b.logf("profiling the router and the shards for %ds into %s (go tool pprof %s <file>)", secs, b.o.profile, b.bin)
}

// histogram is the count and sum of a Prometheus histogram.
type histogram struct{ count, sum float64 }

// batchSizes reads the router's annshard_router_batch_size: one observation per search
// request to a replica, of the number of searches it carried.
func (b *bench) batchSizes(ctx context.Context) (histogram, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.router.URL()+"/metrics", nil)
	if err != nil {
		return histogram{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return histogram{}, fmt.Errorf("router metrics: %w", err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return histogram{}, fmt.Errorf("router metrics: %w", err)
	}
	f, ok := fams["annshard_router_batch_size"]
	if !ok || len(f.GetMetric()) != 1 || f.GetMetric()[0].GetHistogram() == nil {
		return histogram{}, errors.New("router metrics: no annshard_router_batch_size histogram")
	}
	h := f.GetMetric()[0].GetHistogram()
	return histogram{count: float64(h.GetSampleCount()), sum: h.GetSampleSum()}, nil
}

// searchInProcess runs the queries over idxs (searchIndexes) on c goroutines back to
// back for d.
func searchInProcess(idxs []*hnsw.Index, queries [][]float32, o options, c int, d time.Duration) ([]time.Duration, error) {
	return benchkit.ClosedLoop(c, d, func() func(int) error {
		buf, part := make([]hnsw.Result, 0, len(idxs)*o.k), make([]hnsw.Result, 0, o.k)
		return func(i int) error {
			var err error
			buf, part, err = searchIndexes(idxs, buf, part, queries[i%len(queries)], o)
			return err
		}
	})
}

// processesCPU adds up the user and system CPU seconds of the processes, from
// /proc/<pid>/stat.
func processesCPU(ps []*proctest.Process) (float64, error) {
	var total float64
	for _, p := range ps {
		s, err := benchkit.ProcessCPU(p.Pid())
		if err != nil {
			return 0, err
		}
		total += s
	}
	return total, nil
}
