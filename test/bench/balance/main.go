// Command balance benchmarks the router's replica-selection policies against real
// `shardserver serve` processes on loopback: 3 shards x 3 replicas (a primary and two
// replicas streaming from it), with a delaying proxy in front of every replica so that
// one replica per shard can be made slow. A router reaches through a proxy only the
// replicas its scenario can slow (all of them in shifting; -proxy-all: always all), and
// the others directly, as over a healthy network:
//
//	healthy   no delay anywhere
//	slow5x    one replica per shard serves searches 5x slower
//	slow10x   the same at 10x
//	shifting  the 10x-slow replica changes every -shift (2s)
//	slowlink  one replica per shard behind a bandwidth-limited link (-link-kbps)
//
// For each scenario and policy a fresh `shardserver route` process gets a fixed offered
// load (open loop: requests leave on schedule whatever the latency, and latency counts
// from the scheduled time, so a stall is not hidden) and the benchmark prints throughput
// and p50/p99/p99.9, and slow%: the share of the replica searches (one per shard per
// query) that went to a replica while it was slow. Runs are interleaved in -rounds
// shuffled rounds and every figure is the median over rounds: on a shared machine a
// stall caused by other work lands in one round of one cell and would otherwise decide
// that cell's tail.
// It also compares closed-loop throughput with the router's micro-batching off and on,
// and measures the router's own overhead: the same single-shard query sent straight to a
// replica and through a router, alternately.
//
// "5x slower" is relative to a service-time unit: the healthy p50 of a direct search,
// floored at -min-base (5ms, a search on a shard of millions of vectors; on this small
// test set a search takes ~0.1ms, far below the scheduling noise of a shared 2-core
// machine); the proxy adds (factor-1) units. The unit is printed.
//
// Usage: go run ./test/bench/balance [-json] [-duration 6s] [-qps 200]
// With -json it prints one object per line:
// {"scenario","policy","qps","p50ms","p99ms","p999ms","slowShare","errors"} (slowShare: the
// share of replica searches that went to a slowed replica) and {"routerOverheadP99ms"}.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/annshard/annshard/shardserver/balance"
	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/proctest"
)

const (
	numShards   = 3
	numReplicas = 3
)

type options struct {
	n, dim, k, queries int
	qps                int
	rounds             int
	duration, warmup   time.Duration
	shift              time.Duration
	minBase            time.Duration
	linkKBps           int
	overheadN          int
	proxyAll           bool
	batchConc          int
	batchDur           time.Duration
	batchWait          time.Duration
	bin                string
	json               bool
	policies           string
	scenarios          string
	seed               uint64
	plot               string
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 6000, "vectors to load (spread over the shards)")
	flag.IntVar(&o.dim, "dim", 32, "dimension")
	flag.IntVar(&o.k, "k", 10, "k of each search")
	flag.IntVar(&o.queries, "queries", 500, "distinct query vectors (cycled)")
	flag.IntVar(&o.qps, "qps", 200, "offered load, searches per second (open loop)")
	flag.DurationVar(&o.duration, "duration", 6*time.Second, "measured time per scenario and policy (split over -rounds)")
	flag.IntVar(&o.rounds, "rounds", 5, "interleaved rounds: every scenario and policy runs once per round (in a shuffled order) and each figure is the median over rounds, so a stall of the machine in one round does not decide it")
	flag.DurationVar(&o.warmup, "warmup", 400*time.Millisecond, "unmeasured load before each measurement")
	flag.DurationVar(&o.shift, "shift", 2*time.Second, "how often the slow replica moves in the shifting scenario")
	flag.DurationVar(&o.minBase, "min-base", 5*time.Millisecond, "floor of the service-time unit the slowdowns multiply (a search on a large shard; also keeps the slow replica above the scheduling noise of a busy machine)")
	flag.IntVar(&o.linkKBps, "link-kbps", 200, "bandwidth of the slow link in KB/s (slowlink scenario)")
	flag.IntVar(&o.overheadN, "overhead-n", 2000, "queries per side of the router-overhead measurement (0 skips it)")
	flag.IntVar(&o.batchConc, "batch-clients", 32, "concurrent clients of the micro-batching comparison (0 skips it)")
	flag.DurationVar(&o.batchDur, "batch-duration", 2*time.Second, "length of each micro-batching run")
	flag.DurationVar(&o.batchWait, "batch-wait", 200*time.Microsecond, "the router's --batch-wait in the micro-batching run")
	flag.StringVar(&o.bin, "bin", "", "shardserver binary (default: go build one)")
	flag.BoolVar(&o.json, "json", false, "print one JSON object per line")
	flag.BoolVar(&o.proxyAll, "proxy-all", false, "route to every replica through its proxy, also to those the scenario never slows (the harness before the proxies were limited to slowed replicas)")
	flag.StringVar(&o.policies, "policies", "", "comma-separated policies (default: all)")
	flag.StringVar(&o.scenarios, "scenarios", "", "comma-separated scenarios (default: all)")
	flag.Uint64Var(&o.seed, "seed", 1, "data and query seed")
	flag.StringVar(&o.plot, "plot", "", "also draw the p99 of every policy per scenario to this `file` (.svg, .png or .pdf)")
	flag.Parse()
	if o.plot != "" {
		if err := checkPlotPath(o.plot); err != nil {
			fmt.Fprintln(os.Stderr, "balance bench:", err)
			os.Exit(2)
		}
	}
	// SIGINT and SIGTERM cancel the run, so an interrupted run still stops its shard processes.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "balance bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	o       options
	dir     string
	bin     string
	token   string
	procs   []*proctest.Process
	proxies [numShards][numReplicas]*proxy
	direct  [numShards][numReplicas]string // replica URLs without proxy
	queries []string                       // vector_b64
	out     io.Writer
}

func run(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "balancebench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{o: o, dir: dir, bin: o.bin, token: "bench-token", out: os.Stdout}
	defer b.stopAll()
	if b.bin == "" {
		b.logf("building shardserver")
		if b.bin, err = proctest.Build(dir); err != nil {
			return err
		}
	}
	if err := b.startShards(ctx); err != nil {
		return err
	}
	if err := b.load(ctx); err != nil {
		return err
	}
	base, err := b.serviceUnit(ctx)
	if err != nil {
		return err
	}
	unit := max(base, o.minBase)
	b.logf("healthy direct search p50 %.2fms; service-time unit %.2fms", ms(base), ms(unit))

	policies := balance.Policies
	if o.policies != "" {
		policies = nil
		for _, p := range strings.Split(o.policies, ",") {
			pp, err := balance.ParsePolicy(p)
			if err != nil {
				return err
			}
			policies = append(policies, pp)
		}
	}
	scenarios := []string{"healthy", "slow5x", "slow10x", "shifting", "slowlink"}
	if o.scenarios != "" {
		scenarios = strings.Split(o.scenarios, ",")
	}
	type cell struct {
		sc string
		p  balance.Policy
	}
	var cells []cell
	for _, sc := range scenarios {
		for _, p := range policies {
			cells = append(cells, cell{sc, p})
		}
	}
	rounds := max(o.rounds, 1)
	slice := o.duration / time.Duration(rounds)
	perRound := map[cell][]stats{}
	rng := rand.New(rand.NewPCG(o.seed, 2))
	for round := range rounds {
		order := slices.Clone(cells)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		b.logf("round %d of %d: %d runs of %v", round+1, rounds, len(order), slice)
		for _, c := range order {
			st, err := b.runOne(ctx, c.sc, c.p, unit, slice)
			if err != nil {
				return fmt.Errorf("%s/%s: %w", c.sc, c.p, err)
			}
			perRound[c] = append(perRound[c], st)
		}
	}
	results := map[string]map[balance.Policy]stats{}
	if !o.json {
		fmt.Fprintf(b.out, "%-9s %-19s %8s %8s %8s %8s %7s\n", "scenario", "policy", "qps", "p50ms", "p99ms", "p99.9ms", "slow%")
	}
	for _, c := range cells {
		st := medianOf(perRound[c])
		if results[c.sc] == nil {
			results[c.sc] = map[balance.Policy]stats{}
		}
		results[c.sc][c.p] = st
		if o.json {
			b.emit(map[string]any{"scenario": c.sc, "policy": string(c.p), "qps": round(st.qps), "p50ms": round(st.p50), "p99ms": round(st.p99), "p999ms": round(st.p999), "slowShare": math.Round(st.slowShare*1e5) / 1e5, "errors": st.errors})
		} else {
			fmt.Fprintf(b.out, "%-9s %-19s %8.1f %8.2f %8.2f %8.2f %7.2f", c.sc, c.p, st.qps, st.p50, st.p99, st.p999, 100*st.slowShare)
			if st.errors > 0 {
				fmt.Fprintf(b.out, "  (%d errors)", st.errors)
			}
			fmt.Fprintln(b.out)
		}
	}
	if o.plot != "" {
		if err := plotP99(o.plot, scenarios, policies, results, o); err != nil {
			return fmt.Errorf("drawing %s: %w", o.plot, err)
		}
		b.logf("wrote %s", o.plot)
	}
	if o.batchConc > 0 {
		// Off and on alternate over rounds so that machine noise hits both alike.
		modes := []struct {
			name string
			args []string
		}{{"off", []string{"--batch-max", "0"}}, {"on", []string{"--batch-max", "16", "--batch-wait", o.batchWait.String()}}}
		var runs [2][]stats
		for range max(o.rounds/2, 2) {
			for i, m := range modes {
				st, err := b.closedLoop(ctx, o.batchConc, o.batchDur, m.args...)
				if err != nil {
					return fmt.Errorf("batching %s: %w", m.name, err)
				}
				runs[i] = append(runs[i], st)
			}
		}
		for i, m := range modes {
			st := medianOf(runs[i])
			if o.json {
				b.emit(map[string]any{"batching": m.name, "concurrency": o.batchConc, "qps": round(st.qps), "p50ms": round(st.p50), "p99ms": round(st.p99)})
			} else {
				fmt.Fprintf(b.out, "micro-batching %-3s  closed loop, %d clients: %8.1f qps  p50 %.2fms  p99 %.2fms\n", m.name, o.batchConc, st.qps, st.p50, st.p99)
			}
		}
	}
	if o.overheadN > 0 {
		oh, err := b.routerOverhead(ctx)
		if err != nil {
			return err
		}
		if o.json {
			b.emit(map[string]any{"routerOverheadP99ms": round(oh.p99), "routerOverheadP50ms": round(oh.p50), "directP99ms": round(oh.directP99), "routedP99ms": round(oh.routedP99)})
		} else {
			fmt.Fprintf(b.out, "router overhead: p50 %.3fms, p99 %.3fms (direct p99 %.3fms, through router %.3fms)\n", oh.p50, oh.p99, oh.directP99, oh.routedP99)
		}
	}
	if !o.json {
		b.goals(results)
	}
	return nil
}

// goals prints the targets next to what was measured.
func (b *bench) goals(results map[string]map[balance.Policy]stats) {
	healthy, ok := results["healthy"][balance.Adaptive]
	if !ok {
		return
	}
	for _, sc := range []string{"slow5x", "slow10x", "shifting", "slowlink"} {
		a, okA := results[sc][balance.Adaptive]
		rr, okR := results[sc][balance.RoundRobin]
		if !okA || !okR || a.p99 == 0 {
			continue
		}
		fmt.Fprintf(b.out, "goal %-9s Adaptive p99 / healthy p99 = %.2f (<= 1.5)   RoundRobin p99 / Adaptive p99 = %.2f (>= 2.7)\n",
			sc, a.p99/healthy.p99, rr.p99/a.p99)
	}
}

func (b *bench) emit(v map[string]any) {
	line, _ := json.Marshal(v)
	fmt.Fprintln(b.out, string(line))
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "# "+format+"\n", args...)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func round(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// startShards starts the shard processes and a proxy in front of each.
func (b *bench) startShards(ctx context.Context) error {
	tokenFile := filepath.Join(b.dir, "token")
	if err := os.WriteFile(tokenFile, []byte(b.token), 0o600); err != nil {
		return err
	}
	for k := range numShards {
		var primary string
		for r := range numReplicas {
			args := []string{"--data-dir", filepath.Join(b.dir, fmt.Sprintf("s%d-%d", k, r)), "--dimension", strconv.Itoa(b.o.dim),
				"--token-file", tokenFile, "--wal-sync", "Interval", "--m", "16", "--ef-construction", "100", "--ef-search", "64"}
			if r > 0 {
				args = append(args, "--primary", primary)
			}
			p, err := b.startProc(ctx, "serve", filepath.Join(b.dir, fmt.Sprintf("s%d-%d.log", k, r)), nil, args...)
			if err != nil {
				return err
			}
			b.procs = append(b.procs, p)
			if r == 0 {
				primary = p.URL()
			}
			b.direct[k][r] = p.URL()
			px, err := newProxy(p.URL())
			if err != nil {
				return err
			}
			b.proxies[k][r] = px
		}
	}
	b.logf("started %d shards x %d replicas", numShards, numReplicas)
	return nil
}

func (b *bench) stopAll() {
	for _, p := range b.procs {
		stopProc(p)
	}
	for k := range b.proxies {
		for _, px := range b.proxies[k] {
			if px != nil {
				px.close()
			}
		}
	}
}

// shardSpec is the --shards flag of a router for scenario sc: a replica the scenario can
// slow is reached through its proxy, the others directly (with -proxy-all, every replica
// through its proxy). The proxy is a hop inside this process, not part of a healthy
// network: it adds ~0.5ms at p50 and several ms at p99 on a shared 2-core machine to
// every search that crosses it, alike for every policy, which would hide the
// differences between policies that the scenarios are there to show.
func (b *bench) shardSpec(sc string) string {
	var parts []string
	for k := range numShards {
		var urls []string
		for r := range numReplicas {
			if b.o.proxyAll || slowable(sc, k, r) {
				urls = append(urls, b.proxies[k][r].url())
			} else {
				urls = append(urls, b.direct[k][r])
			}
		}
		parts = append(parts, fmt.Sprintf("%d=%s", k, strings.Join(urls, ",")))
	}
	return strings.Join(parts, ";")
}

// slowReplica is the replica of shard k that the slow5x, slow10x and slowlink scenarios slow.
func slowReplica(k int) int { return (k + 1) % numReplicas }

// slowable reports whether scenario sc ever slows replica r of shard k.
func slowable(sc string, k, r int) bool {
	switch sc {
	case "shifting":
		return true
	case "slow5x", "slow10x", "slowlink":
		return r == slowReplica(k)
	}
	return false
}

// startProc starts `shardserver <role>` with its log in logPath and waits for /healthz.
func (b *bench) startProc(ctx context.Context, role, logPath string, env []string, args ...string) (*proctest.Process, error) {
	return proctest.Start(ctx, proctest.Spec{Bin: b.bin, Role: role, Args: args, Env: env, LogPath: logPath, StartTimeout: 30 * time.Second})
}

func (b *bench) startRouter(ctx context.Context, policy balance.Policy, spec string, extra ...string) (*proctest.Process, error) {
	return b.startProc(ctx, "route", filepath.Join(b.dir, "router-"+string(policy)+".log"), []string{"ANNSHARD_TOKEN=" + b.token},
		append([]string{"--shards", spec, "--policy", string(policy), "--cache-entries", "0", "--hedge-percentile", "0",
			"--timeout", "5s", "--load-interval", "500ms"}, extra...)...)
}

// load writes the data through a router (split by owner) and waits for every replica.
func (b *bench) load(ctx context.Context) error {
	rt, err := b.startRouter(ctx, balance.RoundRobin, b.shardSpec("healthy"))
	if err != nil {
		return err
	}
	defer stopProc(rt)
	rng := rand.New(rand.NewPCG(b.o.seed, 1))
	c := client.New(rt.URL(), client.WithToken(b.token))
	const batch = 500
	for i := 0; i < b.o.n; i += batch {
		req := &client.UpsertRequest{}
		for j := i; j < min(i+batch, b.o.n); j++ {
			req.Vectors = append(req.Vectors, client.Vector{ID: "v" + strconv.Itoa(j), VectorB64: client.EncodeB64(randVec(rng, b.o.dim))})
		}
		if _, err := c.Upsert(ctx, req); err != nil {
			return fmt.Errorf("loading: %w", err)
		}
	}
	for range b.o.queries {
		b.queries = append(b.queries, client.EncodeB64(randVec(rng, b.o.dim)))
	}
	// Every replica of a shard must hold what its primary holds.
	deadline := time.Now().Add(2 * time.Minute)
	for k := range numShards {
		want := -1
		for r := range numReplicas {
			for {
				lr, err := client.New(b.direct[k][r]).Load(ctx)
				if err == nil && r == 0 {
					want = lr.Vectors
					break
				}
				if err == nil && lr.Vectors == want && lr.Ready {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("shard %d replica %d did not catch up: %+v, %v", k, r, lr, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	b.logf("loaded %d vectors of dimension %d", b.o.n, b.o.dim)
	return nil
}

func randVec(rng *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = rng.Float32()
	}
	return v
}

// serviceUnit is the p50 of a direct search to one replica, closed loop.
func (b *bench) serviceUnit(ctx context.Context) (time.Duration, error) {
	c := client.New(b.direct[0][0], client.WithHTTPClient(newHTTPClient()))
	var lats []time.Duration
	for i := range 400 {
		start := time.Now()
		if _, err := c.Search(ctx, &client.SearchRequest{VectorB64: b.queries[i%len(b.queries)], K: b.o.k}); err != nil {
			return 0, err
		}
		lats = append(lats, time.Since(start))
	}
	slices.Sort(lats)
	return lats[len(lats)/2], nil
}

// scenario sets the proxies for one scenario and returns a function that undoes it; a
// shifting scenario runs a goroutine until the returned function is called.
func (b *bench) scenario(name string, unit time.Duration) (func(), error) {
	slowBy := func(factor int) time.Duration { return time.Duration(factor-1) * unit }
	reset := func() {
		for k := range b.proxies {
			for _, px := range b.proxies[k] {
				px.delay.Store(0)
				px.link.Store(nil)
			}
		}
	}
	reset()
	switch name {
	case "healthy":
	case "slow5x", "slow10x":
		f := 5
		if name == "slow10x" {
			f = 10
		}
		for k := range numShards {
			b.proxies[k][slowReplica(k)].delay.Store(int64(slowBy(f)))
		}
	case "shifting":
		// The slow replica follows the wall clock, so it keeps moving across the short
		// runs of interleaved rounds.
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				turn := int(time.Now().UnixNano() / int64(b.o.shift))
				for k := range numShards {
					for r := range numReplicas {
						d := time.Duration(0)
						if r == (k+turn)%numReplicas {
							d = slowBy(10)
						}
						b.proxies[k][r].delay.Store(int64(d))
					}
				}
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		return func() { close(stop); <-done; reset() }, nil
	case "slowlink":
		for k := range numShards {
			b.proxies[k][slowReplica(k)].link.Store(newLink(b.o.linkKBps * 1000))
		}
	default:
		return nil, fmt.Errorf("unknown scenario %q", name)
	}
	return reset, nil
}

type stats struct {
	qps, p50, p99, p999 float64
	// slowShare is the share of the replica searches (one per shard per query) that
	// went to a replica while the scenario slowed it.
	slowShare float64
	errors    int
}

// runOne measures one scenario and policy for d with a fresh router, after a warm-up.
func (b *bench) runOne(ctx context.Context, sc string, p balance.Policy, unit, d time.Duration) (stats, error) {
	rt, err := b.startRouter(ctx, p, b.shardSpec(sc))
	if err != nil {
		return stats{}, err
	}
	defer stopProc(rt)
	undo, err := b.scenario(sc, unit)
	if err != nil {
		return stats{}, err
	}
	defer undo()
	c := client.New(rt.URL(), client.WithHTTPClient(newHTTPClient()))
	_, _ = openLoop(ctx, c, b.queries, b.o.k, b.o.qps, b.o.warmup)
	slow0 := b.slowedSearches()
	lats, errs := openLoop(ctx, c, b.queries, b.o.k, b.o.qps, d)
	st := summarize(lats, errs, d)
	// Hedging is off, so every query searches one replica of every shard.
	if n := len(lats) + errs; n > 0 {
		st.slowShare = float64(b.slowedSearches()-slow0) / float64(n*numShards)
	}
	return st, ctx.Err()
}

// slowedSearches sums the proxies' counts of searches they slowed.
func (b *bench) slowedSearches() int64 {
	var n int64
	for k := range b.proxies {
		for _, px := range b.proxies[k] {
			n += px.slowed.Load()
		}
	}
	return n
}

// medianOf combines the rounds of one cell: each figure is the median over rounds, so a
// stall of the whole machine (other work on it) during one round does not decide a
// percentile; errors add up.
func medianOf(rounds []stats) stats {
	med := func(f func(stats) float64) float64 {
		v := make([]float64, len(rounds))
		for i, r := range rounds {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	out := stats{
		qps:       med(func(s stats) float64 { return s.qps }),
		p50:       med(func(s stats) float64 { return s.p50 }),
		p99:       med(func(s stats) float64 { return s.p99 }),
		p999:      med(func(s stats) float64 { return s.p999 }),
		slowShare: med(func(s stats) float64 { return s.slowShare }),
	}
	for _, r := range rounds {
		out.errors += r.errors
	}
	return out
}

func summarize(lats []time.Duration, errs int, d time.Duration) stats {
	st := stats{errors: errs, qps: float64(len(lats)) / d.Seconds()}
	if len(lats) == 0 {
		return st
	}
	lats = slices.Clone(lats)
	slices.Sort(lats)
	st.p50, st.p99, st.p999 = quantile(lats, 0.50), quantile(lats, 0.99), quantile(lats, 0.999)
	return st
}

// quantile returns the p-quantile of sorted (not empty) latencies, in milliseconds.
func quantile(sorted []time.Duration, p float64) float64 {
	return ms(sorted[min(len(sorted)-1, int(p*float64(len(sorted))))])
}

// openLoop sends searches at a fixed rate for d, each on its own goroutine, and returns
// the latencies of those that succeeded, measured from their scheduled start.
func openLoop(ctx context.Context, c *client.Client, queries []string, k, qps int, d time.Duration) ([]time.Duration, int) {
	n := int(d.Seconds() * float64(qps))
	interval := time.Second / time.Duration(qps)
	lats := make([]time.Duration, n)
	ok := make([]bool, n)
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			select {
			case <-time.After(w):
			case <-ctx.Done():
				wg.Wait()
				return nil, 0
			}
		}
		wg.Go(func() {
			_, err := c.Search(ctx, &client.SearchRequest{VectorB64: queries[i%len(queries)], K: k})
			if err != nil {
				errs.Add(1)
				return
			}
			lats[i], ok[i] = time.Since(at), true
		})
	}
	wg.Wait()
	var out []time.Duration
	for i, l := range lats {
		if ok[i] {
			out = append(out, l)
		}
	}
	return out, int(errs.Load())
}

// closedLoop measures the throughput of conc clients searching back to back for d,
// after a warm-up, through a router (healthy replicas) started with extra flags. The
// caller alternates the modes over rounds.
func (b *bench) closedLoop(ctx context.Context, conc int, d time.Duration, extra ...string) (stats, error) {
	rt, err := b.startRouter(ctx, balance.Adaptive, b.shardSpec("healthy"), extra...)
	if err != nil {
		return stats{}, err
	}
	defer stopProc(rt)
	undo, err := b.scenario("healthy", 0)
	if err != nil {
		return stats{}, err
	}
	defer undo()
	c := client.New(rt.URL(), client.WithHTTPClient(newHTTPClient()))
	var mu sync.Mutex
	var lats []time.Duration
	var errs atomic.Int64
	var wg sync.WaitGroup
	warm := time.Now().Add(b.o.warmup)
	end := warm.Add(d)
	for g := range conc {
		wg.Go(func() {
			var mine []time.Duration
			for i := g; time.Now().Before(end) && ctx.Err() == nil; i += conc {
				start := time.Now()
				if _, err := c.Search(ctx, &client.SearchRequest{VectorB64: b.queries[i%len(b.queries)], K: b.o.k}); err != nil {
					errs.Add(1)
					continue
				}
				if start.After(warm) {
					mine = append(mine, time.Since(start))
				}
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return summarize(lats, int(errs.Load()), d), ctx.Err()
}

type overhead struct{ p50, p99, directP99, routedP99 float64 }

// routerOverhead sends the same queries straight to one replica and through a router
// whose only shard is that replica, alternating, closed loop, and compares percentiles.
func (b *bench) routerOverhead(ctx context.Context) (overhead, error) {
	rt, err := b.startRouter(ctx, balance.Adaptive, "0="+b.direct[0][0])
	if err != nil {
		return overhead{}, err
	}
	defer stopProc(rt)
	hc := newHTTPClient()
	direct := client.New(b.direct[0][0], client.WithHTTPClient(hc))
	routed := client.New(rt.URL(), client.WithHTTPClient(hc))
	var dl, rl []time.Duration
	for i := range b.o.overheadN + 100 {
		q := &client.SearchRequest{VectorB64: b.queries[i%len(b.queries)], K: b.o.k}
		for j, c := range []*client.Client{direct, routed} {
			if i%2 == 1 {
				c = []*client.Client{routed, direct}[j]
			}
			start := time.Now()
			if _, err := c.Search(ctx, q); err != nil {
				return overhead{}, fmt.Errorf("overhead search: %w", err)
			}
			if i < 100 {
				continue // warm-up
			}
			if c == direct {
				dl = append(dl, time.Since(start))
			} else {
				rl = append(rl, time.Since(start))
			}
		}
	}
	slices.Sort(dl)
	slices.Sort(rl)
	return overhead{
		p50: quantile(rl, .5) - quantile(dl, .5), p99: quantile(rl, .99) - quantile(dl, .99),
		directP99: quantile(dl, .99), routedP99: quantile(rl, .99),
	}, nil
}

func newHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 512
	return &http.Client{Transport: t}
}

// proxy forwards everything to one replica; searches can be delayed (a slow replica) or
// sent through a bandwidth-limited link. /v1/load is never slowed: the router must find
// the slow replica from what it observes, not from a report.
type proxy struct {
	target string
	delay  atomic.Int64 // ns added before forwarding a search
	link   atomic.Pointer[link]
	// slowed counts the searches that were delayed or sent through a slow link.
	slowed atomic.Int64
	hc     *http.Client
	srv    *http.Server
	ln     net.Listener
}

func newProxy(target string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{target: target, hc: newHTTPClient(), ln: ln}
	p.srv = &http.Server{Handler: p}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

func (p *proxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) close() { _ = p.srv.Close() }

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	search := strings.HasPrefix(r.URL.Path, "/v1/search")
	l := p.link.Load()
	if search {
		d := time.Duration(p.delay.Load())
		if d > 0 || l != nil {
			p.slowed.Add(1)
		}
		if d > 0 && !sleepCtx(r.Context(), d) {
			return
		}
		if l != nil && !l.transfer(r.Context(), len(body)+len(r.URL.Path)+200) {
			return
		}
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := p.hc.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if search && l != nil && !l.transfer(r.Context(), len(out)+200) {
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(out)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// link is a shared serial link of fixed bandwidth: transfers queue behind each other,
// so concurrency costs latency the way a saturated network link does.
type link struct {
	bytesPerSec float64
	mu          sync.Mutex
	free        time.Time
}

func newLink(bytesPerSec int) *link { return &link{bytesPerSec: float64(bytesPerSec)} }

func (l *link) transfer(ctx context.Context, n int) bool {
	l.mu.Lock()
	start := time.Now()
	if l.free.After(start) {
		start = l.free
	}
	l.free = start.Add(time.Duration(float64(n) / l.bytesPerSec * float64(time.Second)))
	end := l.free
	l.mu.Unlock()
	return sleepCtx(ctx, time.Until(end))
}

// stopProc sends SIGTERM and waits, killing after 10s.
func stopProc(p *proctest.Process) { _ = p.Stop(10 * time.Second) }
