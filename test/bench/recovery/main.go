// Command recovery measures how fast a real `shardserver serve` process is serving again
// after it is killed (SIGKILL) at random moments of a steady ingest, and after a graceful
// restart (SIGTERM), on one shard of N vectors with the server's default flags.
//
// It runs, in order:
//  1. the core's build rate: an in-process HNSW index (same M and efConstruction as the
//     server's defaults) built from the same vectors on every core;
//  2. the ingest: all N vectors upserted through the API (batches of -batch, -inflight
//     requests at once), the rate set against the core's (goal >= 0.8);
//  3. -rounds kill rounds: a steady ingest of upserts (existing ids, new vectors) runs
//     while the server is killed after a random delay in [-kill-min, -kill-max]; it is
//     restarted at once and the time from exec to GET /readyz answering 200 is its time
//     to ready, printed beside the CPU time the process used until then (on a loaded
//     machine the wait for a core stretches the first, hardly the second). Acknowledged writes are then checked: every id of the batches in flight
//     at the kill (old or new vector, never a mix within a batch) and a sample of the
//     others (their last acknowledged vector);
//  4. -graceful graceful restarts (SIGTERM, restart, time to ready).
//
// It prints the time to ready p50 and max, the vectors replayed (from the WAL, and the
// tail of the snapshot: what the restart had to insert into the graph again), the time
// to fully indexed, the snapshot time and size, the memory per vector (resident, from
// /metrics) and the ingest ratio (of the rates, and of the CPU time per vector, which other
// load on the machine hardly changes); -json prints one JSON object per line instead.
//
// Usage: go run ./test/bench/recovery [-n 1000000 -dim 128 -rounds 10 -json]
//
// Everything runs on this machine (127.0.0.1): the server, the load generator and the
// in-process build share its cores. The load average is printed with the figures.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
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

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/proctest"
	"github.com/annshard/annshard/test/bench/internal/benchkit"
)

type options struct {
	n, dim, rounds, graceful int
	batch, inflight, verify  int
	killMin, killMax         time.Duration
	readyTimeout             time.Duration
	seed                     uint64
	coreN                    int
	bin, dir, serverArgs     string
	json, keep, fill         bool
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 100000, "vectors in the shard")
	flag.IntVar(&o.dim, "dim", 128, "dimension")
	flag.IntVar(&o.rounds, "rounds", 10, "kill -9 rounds")
	flag.IntVar(&o.graceful, "graceful", 1, "graceful restarts (SIGTERM) after the kill rounds")
	flag.IntVar(&o.batch, "batch", 500, "vectors per upsert request")
	flag.IntVar(&o.inflight, "inflight", 4, "upsert requests in flight")
	flag.IntVar(&o.verify, "verify", 2000, "acknowledged ids checked after each restart, besides those in flight at the kill")
	flag.DurationVar(&o.killMin, "kill-min", time.Second, "least time the steady ingest runs before the kill")
	flag.DurationVar(&o.killMax, "kill-max", 40*time.Second, "most time the steady ingest runs before the kill")
	flag.DurationVar(&o.readyTimeout, "ready-timeout", 10*time.Minute, "give up on a restart after this long")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the vectors and of the kill times")
	flag.IntVar(&o.coreN, "core-n", 0, "vectors of the in-process build the ingest rate is compared with (0: n; the same data)")
	flag.StringVar(&o.bin, "bin", "", "shardserver binary (default: go build one)")
	flag.StringVar(&o.dir, "dir", "", "data directory (default: a new temporary one, removed at the end)")
	flag.StringVar(&o.serverArgs, "server-args", "", "extra flags for the server, space separated (default: none, the server's defaults)")
	flag.BoolVar(&o.json, "json", false, "print one JSON object per line")
	flag.BoolVar(&o.keep, "keep", false, "keep the data directory")
	flag.BoolVar(&o.fill, "fill", true, "measure the core build and ingest the n vectors; -fill=false reuses the shard of a -dir a run with -keep filled (same -n, -dim, -seed)")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "recovery:", err)
		os.Exit(1)
	}
}

// vectors generates the uniform random vectors of the benchmark: vector i of seed s is
// always the same, so a writer keeps a seed per id, not the vector.
type vectors struct{ dim int }

func (g vectors) of(seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	v := make([]float32, g.dim)
	for i := range v {
		v[i] = r.Float32()
	}
	return v
}

// fillSeed is the seed of the vector id i gets in the initial ingest; updates use seeds
// above 1<<40.
func fillSeed(i int) uint64 { return uint64(i) + 1 }

func run(ctx context.Context, o options) error {
	gen := vectors{dim: o.dim}
	bin := o.bin
	if bin == "" {
		dir, err := os.MkdirTemp("", "bench-recovery-bin")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if bin, err = proctest.Build(dir); err != nil {
			return err
		}
	}
	dir := o.dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "bench-recovery"); err != nil {
			return err
		}
		if !o.keep {
			defer os.RemoveAll(dir)
		}
	}
	out := printer{json: o.json}
	out.header(o)

	srv := &server{bin: bin, dir: dir, o: o}
	truth := newTruth(o.n)
	if o.fill {
		coreRate, coreCPU, err := coreBuildRate(gen, o)
		if err != nil {
			return err
		}
		out.emit(result{Kind: "build", Vectors: coreN(o), VectorsPerSecond: coreRate, CPUPerVectorMs: coreCPU * 1e3, Load: benchkit.LoadAvg()})
		if _, err := srv.start(ctx); err != nil {
			return err
		}
		defer srv.kill()
		before, err := srv.client().Load(ctx)
		if err != nil {
			return err
		}
		start := time.Now()
		if err := ingestAll(ctx, srv.client(), gen, o); err != nil {
			return err
		}
		rate := float64(o.n) / time.Since(start).Seconds()
		after, err := srv.client().Load(ctx)
		if err != nil {
			return err
		}
		serverCPU := (after.CPUSeconds - before.CPUSeconds) / float64(o.n)
		out.emit(result{Kind: "ingest", Vectors: o.n, VectorsPerSecond: rate, Ratio: rate / coreRate,
			CPUPerVectorMs: serverCPU * 1e3, CPURatio: coreCPU / serverCPU, Load: benchkit.LoadAvg(),
			Note: "goal >= 0.8 of the core's build rate"})
	} else {
		// A reused shard was last stopped gracefully, holding the fill vectors (the
		// kill rounds' updates are not known to this run: -fill=false wants a shard
		// whose last run ended with its fill, i.e. -rounds 0).
		ttr, err := srv.start(ctx)
		if err != nil {
			return err
		}
		defer srv.kill()
		out.emit(result{Kind: "graceful", ReadySeconds: ttr.Seconds(), Load: benchkit.LoadAvg(), Note: "start of the reused shard"})
	}

	// The steady state before the kills: the last snapshot and the memory.
	rep, err := srv.client().Load(ctx)
	if err != nil {
		return err
	}
	rss, err := srv.rss(ctx)
	if err != nil {
		return err
	}
	out.emit(result{Kind: "memory", Vectors: rep.Vectors, RSSBytes: rss, BytesPerVector: float64(rss) / float64(rep.Vectors),
		EstimateBytesPerVector: float64(rep.MemoryBytes) / float64(rep.Vectors)})
	if rep.LastSnapshot != nil {
		out.emit(snapshotResult(rep.LastSnapshot))
	}

	rng := rand.New(rand.NewPCG(o.seed, 99))
	var ttrs []float64
	var rounds []result
	for round := range o.rounds {
		res, err := killRound(ctx, srv, gen, truth, o, rng, round)
		if err != nil {
			return fmt.Errorf("round %d: %w", round+1, err)
		}
		out.emit(res)
		rounds = append(rounds, res)
		ttrs = append(ttrs, res.ReadySeconds)
	}
	for range o.graceful {
		res, err := gracefulRound(ctx, srv, o)
		if err != nil {
			return err
		}
		out.emit(res)
	}
	if len(ttrs) > 0 {
		sum := summarize(rounds, ttrs)
		out.emit(sum)
	}
	return nil
}

func coreN(o options) int {
	if o.coreN > 0 {
		return min(o.coreN, o.n)
	}
	return o.n
}

// coreBuildRate builds an index of the same vectors in process, on every core, and
// returns its rate and the CPU time it took per vector.
func coreBuildRate(gen vectors, o options) (rate, cpuPerVector float64, err error) {
	n := coreN(o)
	data := make([][]float32, n)
	for i := range data {
		data[i] = gen.of(fillSeed(i))
	}
	idx, err := hnsw.New(hnsw.Config{Dim: o.dim, M: 16, EfConstruction: 200, Capacity: n})
	if err != nil {
		return 0, 0, err
	}
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	cpu0 := benchkit.SelfCPU()
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if err := idx.Add(uint64(i), data[i]); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return 0, 0, err
	}
	return float64(n) / time.Since(start).Seconds(), (benchkit.SelfCPU() - cpu0) / float64(n), nil
}

// server is the one shard process, restarted on the same address and data directory.
type server struct {
	bin, dir string
	o        options
	addr     string
	p        *proctest.Process
	// readyCPU is the CPU time (user and system) the last start used until ready: the
	// machine's other load stretches the time to ready, hardly this.
	readyCPU float64
}

func (s *server) client() *client.Client { return client.New(s.p.URL()) }

// start runs the server and returns its time to ready: from exec to /readyz answering.
func (s *server) start(ctx context.Context) (time.Duration, error) {
	if s.addr == "" {
		var err error
		if s.addr, err = proctest.FreeAddr(); err != nil {
			return 0, err
		}
	}
	args := []string{"--data-dir", filepath.Join(s.dir, "data"), "--dimension", strconv.Itoa(s.o.dim)}
	args = append(args, strings.Fields(s.o.serverArgs)...)
	begin := time.Now()
	p, err := proctest.Start(ctx, proctest.Spec{Bin: s.bin, Role: "serve", Addr: s.addr, Args: args,
		LogPath: filepath.Join(s.dir, "server.log"), StartTimeout: s.o.readyTimeout})
	if err != nil {
		return 0, err
	}
	s.p = p
	c := s.client()
	for c.Ready(ctx) != nil {
		if time.Since(begin) > s.o.readyTimeout {
			return 0, fmt.Errorf("not ready after %v", s.o.readyTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ttr := time.Since(begin)
	s.readyCPU, _ = benchkit.ProcessCPU(p.Pid()) // 0 where /proc has none
	return ttr, nil
}

func (s *server) kill() {
	if s.p != nil {
		s.p.Kill()
	}
}

// rss reads the server's resident memory from its /metrics.
func (s *server) rss(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.p.URL()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_resident_memory_bytes "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int64(f), err
		}
	}
	return 0, errors.New("no process_resident_memory_bytes in /metrics")
}

// truth is what the benchmark wrote: the seed of each id's last acknowledged vector.
type truth struct {
	mu    sync.Mutex
	seeds []uint64
}

func newTruth(n int) *truth {
	t := &truth{seeds: make([]uint64, n)}
	for i := range t.seeds {
		t.seeds[i] = fillSeed(i)
	}
	return t
}

// ingestAll upserts ids 0..n-1 with their fill vectors.
func ingestAll(ctx context.Context, c *client.Client, gen vectors, o options) error {
	var next atomic.Int64
	errc := make(chan error, o.inflight)
	var wg sync.WaitGroup
	for range o.inflight {
		wg.Go(func() {
			for {
				from := int(next.Add(int64(o.batch))) - o.batch
				if from >= o.n {
					return
				}
				req := &client.UpsertRequest{}
				for i := from; i < min(from+o.batch, o.n); i++ {
					req.Vectors = append(req.Vectors, client.Vector{ID: strconv.Itoa(i), VectorB64: client.EncodeB64(gen.of(fillSeed(i)))})
				}
				if _, err := c.Upsert(ctx, req); err != nil {
					errc <- fmt.Errorf("ingest: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// batchWrite is one upsert batch of the steady ingest: id -> seed.
type batchWrite map[int]uint64

// killRound runs a steady ingest of upserts, kills the server at a random moment,
// restarts it, measures the time to ready and checks the acknowledged writes.
func killRound(ctx context.Context, srv *server, gen vectors, tr *truth, o options, rng *rand.Rand, round int) (result, error) {
	delay := o.killMin + time.Duration(rng.Int64N(int64(o.killMax-o.killMin)+1))
	c := srv.client()
	var stop atomic.Bool
	var acked atomic.Int64
	pending := make([]batchWrite, o.inflight) // the batch each writer had in flight at the kill
	lastAcked := make([]batchWrite, o.inflight)
	var wg sync.WaitGroup
	for w := range o.inflight {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(o.seed, uint64(round*1000+w)))
			for !stop.Load() {
				// Writer w owns the ids = w mod inflight, so it alone orders their writes.
				b := batchWrite{}
				req := &client.UpsertRequest{}
				for len(b) < o.batch {
					id := r.IntN(o.n/o.inflight)*o.inflight + w
					if id >= o.n {
						continue
					}
					if _, dup := b[id]; dup {
						continue
					}
					seed := 1<<40 | uint64(round)<<32 | r.Uint64()&0xffffffff
					b[id] = seed
					req.Vectors = append(req.Vectors, client.Vector{ID: strconv.Itoa(id), VectorB64: client.EncodeB64(gen.of(seed))})
				}
				if _, err := c.Upsert(ctx, req); err != nil {
					pending[w] = b
					return
				}
				tr.mu.Lock()
				for id, seed := range b {
					tr.seeds[id] = seed
				}
				tr.mu.Unlock()
				lastAcked[w] = b
				acked.Add(int64(len(b)))
			}
		})
	}
	time.Sleep(delay)
	var snap *client.SnapshotReport
	if rep, err := c.Load(ctx); err == nil {
		snap = rep.LastSnapshot
	}
	killedAt := time.Now()
	srv.kill()
	stop.Store(true)
	wg.Wait()
	ttr, err := srv.start(ctx)
	if err != nil {
		return result{}, err
	}
	sinceKill := time.Since(killedAt)
	// The graph catches up in the background while the writes are checked (which the
	// tail's exact scan answers meanwhile).
	type indexed struct {
		seconds float64
		err     error
	}
	indexedc := make(chan indexed, 1)
	go func() {
		sec, err := waitIndexed(ctx, srv.client(), o.readyTimeout)
		indexedc <- indexed{sec, err}
	}()
	rep, err := srv.client().Load(ctx)
	if err != nil {
		return result{}, err
	}
	checked, err := verify(ctx, srv.client(), gen, tr, pending, lastAcked, o, rng)
	if err != nil {
		return result{}, err
	}
	if rep.Vectors != o.n {
		return result{}, fmt.Errorf("%d vectors after the restart, want %d", rep.Vectors, o.n)
	}
	res := result{Kind: "round", Round: round + 1, IngestSeconds: delay.Seconds(), AckedWrites: acked.Load(),
		ReadySeconds: ttr.Seconds(), ReadyCPUSeconds: srv.readyCPU, KillToReadySeconds: sinceKill.Seconds(), Checked: checked, Load: benchkit.LoadAvg()}
	if snap != nil {
		res.SnapshotBytes, res.SnapshotSeconds = snap.Bytes, snap.Seconds
	}
	if rec := rep.Recovery; rec != nil {
		res.SnapshotLoadSeconds, res.ReplayedVectors, res.ReplayedBytes = rec.SnapshotLoadSeconds, rec.ReplayedVectors, rec.ReplayedBytes
		res.ReplaySeconds, res.TailVectors = rec.ReplaySeconds, rec.TailVectors
	}
	ix := <-indexedc
	if ix.err != nil {
		return result{}, ix.err
	}
	res.IndexedSeconds = ttr.Seconds() + ix.seconds
	return res, nil
}

// waitIndexed waits until the restarted server has every vector in its graph and returns
// how long that took from now.
func waitIndexed(ctx context.Context, c *client.Client, limit time.Duration) (float64, error) {
	start := time.Now()
	for {
		rep, err := c.Load(ctx)
		if err != nil {
			return 0, err
		}
		if rep.Unindexed == 0 {
			return time.Since(start).Seconds(), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("%d vectors still not in the graph after %v", rep.Unindexed, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// verify checks the ids of the batches in flight at the kill (each batch all old or all
// new), the last acknowledged batch of each writer and a random sample of ids.
func verify(ctx context.Context, c *client.Client, gen vectors, tr *truth, pending, lastAcked []batchWrite, o options, rng *rand.Rand) (int, error) {
	get := func(id int) ([]float32, error) {
		v, err := c.Get(ctx, strconv.Itoa(id), "")
		if err != nil {
			return nil, fmt.Errorf("get %d: %w", id, err)
		}
		return v.Vector, nil
	}
	checked := 0
	for w, b := range pending {
		applied, notApplied := 0, 0
		for id, seed := range b {
			got, err := get(id)
			if err != nil {
				return checked, err
			}
			checked++
			switch {
			case slices.Equal(got, gen.of(seed)):
				applied++
			case slices.Equal(got, gen.of(tr.seeds[id])):
				notApplied++
			default:
				return checked, fmt.Errorf("id %d holds neither its acknowledged vector nor the one in flight", id)
			}
		}
		if applied > 0 && notApplied > 0 {
			return checked, fmt.Errorf("writer %d: the batch in flight at the kill is half applied (%d of %d)", w, applied, applied+notApplied)
		}
		if applied > 0 {
			for id, seed := range b {
				tr.seeds[id] = seed
			}
		}
	}
	ids := make([]int, 0, o.verify+o.inflight*o.batch)
	for _, b := range lastAcked {
		for id := range b {
			ids = append(ids, id)
		}
	}
	for range o.verify {
		ids = append(ids, rng.IntN(o.n))
	}
	for _, id := range ids {
		got, err := get(id)
		if err != nil {
			return checked, err
		}
		checked++
		if !slices.Equal(got, gen.of(tr.seeds[id])) {
			return checked, fmt.Errorf("id %d does not hold its last acknowledged vector: a write was lost", id)
		}
	}
	return checked, nil
}

// gracefulRound stops the server with SIGTERM (it writes a snapshot) and restarts it.
func gracefulRound(ctx context.Context, srv *server, o options) (result, error) {
	begin := time.Now()
	if err := srv.p.Stop(5 * time.Minute); err != nil {
		return result{}, fmt.Errorf("graceful stop: %w", err)
	}
	stopped := time.Since(begin)
	ttr, err := srv.start(ctx)
	if err != nil {
		return result{}, err
	}
	res := result{Kind: "graceful", StopSeconds: stopped.Seconds(), ReadySeconds: ttr.Seconds(), ReadyCPUSeconds: srv.readyCPU, Load: benchkit.LoadAvg()}
	rep, err := srv.client().Load(ctx)
	if err != nil {
		return result{}, err
	}
	if rec := rep.Recovery; rec != nil {
		res.SnapshotLoadSeconds, res.ReplayedVectors, res.TailVectors = rec.SnapshotLoadSeconds, rec.ReplayedVectors, rec.TailVectors
	}
	return res, nil
}

func snapshotResult(s *client.SnapshotReport) result {
	return result{Kind: "snapshot", Vectors: s.Vectors, TailVectors: int64(s.TailVectors), SnapshotBytes: s.Bytes, SnapshotSeconds: s.Seconds}
}

func summarize(rounds []result, ttrs []float64) result {
	slices.Sort(ttrs)
	sum := result{Kind: "summary", Rounds: len(rounds), ReadyP50Seconds: ttrs[(len(ttrs)-1)/2], ReadyMaxSeconds: ttrs[len(ttrs)-1],
		Note: "goal <= 10 s at 1M x 128"}
	for _, r := range rounds {
		// The largest snapshot the killed processes had written, and its time.
		if r.SnapshotBytes > sum.SnapshotBytes {
			sum.SnapshotBytes, sum.SnapshotSeconds = r.SnapshotBytes, r.SnapshotSeconds
		}
		sum.ReplayedVectors = max(sum.ReplayedVectors, r.ReplayedVectors)
		sum.TailVectors = max(sum.TailVectors, r.TailVectors)
		sum.IndexedSeconds = max(sum.IndexedSeconds, r.IndexedSeconds)
		sum.ReadyCPUMaxSeconds = max(sum.ReadyCPUMaxSeconds, r.ReadyCPUSeconds)
		sum.AckedWrites += r.AckedWrites
		sum.Checked += r.Checked
	}
	sum.Load = benchkit.LoadAvg()
	return sum
}

// result is one line of output.
type result struct {
	Kind                   string  `json:"kind"`
	Round                  int     `json:"round,omitempty"`
	Rounds                 int     `json:"rounds,omitempty"`
	Vectors                int     `json:"vectors,omitempty"`
	VectorsPerSecond       float64 `json:"vectorsPerSecond,omitempty"`
	Ratio                  float64 `json:"ratio,omitempty"`
	CPUPerVectorMs         float64 `json:"cpuPerVectorMs,omitempty"`
	CPURatio               float64 `json:"cpuRatio,omitempty"`
	RSSBytes               int64   `json:"rssBytes,omitempty"`
	BytesPerVector         float64 `json:"bytesPerVector,omitempty"`
	EstimateBytesPerVector float64 `json:"estimateBytesPerVector,omitempty"`
	SnapshotBytes          int64   `json:"snapshotBytes,omitempty"`
	SnapshotSeconds        float64 `json:"snapshotSeconds,omitempty"`
	IngestSeconds          float64 `json:"ingestSeconds,omitempty"`
	AckedWrites            int64   `json:"ackedWrites,omitempty"`
	ReadySeconds           float64 `json:"readySeconds,omitempty"`
	ReadyCPUSeconds        float64 `json:"readyCPUSeconds,omitempty"`
	ReadyCPUMaxSeconds     float64 `json:"readyCPUMaxSeconds,omitempty"`
	KillToReadySeconds     float64 `json:"killToReadySeconds,omitempty"`
	StopSeconds            float64 `json:"stopSeconds,omitempty"`
	SnapshotLoadSeconds    float64 `json:"snapshotLoadSeconds,omitempty"`
	ReplayedVectors        int64   `json:"replayedVectors,omitempty"`
	ReplayedBytes          int64   `json:"replayedBytes,omitempty"`
	ReplaySeconds          float64 `json:"replaySeconds,omitempty"`
	TailVectors            int64   `json:"tailVectors,omitempty"`
	IndexedSeconds         float64 `json:"indexedSeconds,omitempty"`
	Checked                int     `json:"checked,omitempty"`
	ReadyP50Seconds        float64 `json:"readyP50Seconds,omitempty"`
	ReadyMaxSeconds        float64 `json:"readyMaxSeconds,omitempty"`
	Load                   string  `json:"loadAverage,omitempty"`
	Note                   string  `json:"note,omitempty"`
}

type printer struct{ json bool }

func (p printer) header(o options) {
	if p.json {
		return
	}
	fmt.Printf("bench-recovery: %d x %d uniform vectors, %d kill rounds (ingest %v..%v before each), %d graceful, batches of %d x %d in flight, GOMAXPROCS %d, kernel %s\n",
		o.n, o.dim, o.rounds, o.killMin, o.killMax, o.graceful, o.batch, o.inflight, runtime.GOMAXPROCS(0), hnsw.KernelName())
}

func (p printer) emit(r result) {
	if p.json {
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
		return
	}
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	switch r.Kind {
	case "build":
		fmt.Printf("core build (in process, all cores)  %8d vectors  %8.0f vectors/s   %.3f ms of CPU per vector   load %s\n", r.Vectors, r.VectorsPerSecond, r.CPUPerVectorMs, r.Load)
	case "ingest":
		fmt.Printf("ingest through the API              %8d vectors  %8.0f vectors/s   ratio %.2f (%s)   load %s\n", r.Vectors, r.VectorsPerSecond, r.Ratio, r.Note, r.Load)
		fmt.Printf("  server CPU %.3f ms per vector: the core's CPU per vector over the server's is %.2f (the ratio with the cores to themselves)\n", r.CPUPerVectorMs, r.CPURatio)
	case "memory":
		fmt.Printf("memory                              %8d vectors  RSS %.0f MiB = %.0f B/vector (index estimate %.0f B/vector)\n", r.Vectors, mib(r.RSSBytes), r.BytesPerVector, r.EstimateBytesPerVector)
	case "snapshot":
		fmt.Printf("last snapshot                       %8d vectors  %.0f MiB in %.2f s (tail %d)\n", r.Vectors, mib(r.SnapshotBytes), r.SnapshotSeconds, r.TailVectors)
	case "round":
		fmt.Printf("round %2d: killed after %5.1f s of ingest (%7d acked): ready in %5.2f s (%.2f s of CPU; snapshot load %.2f s, replayed %d vectors / %.0f MiB in %.2f s, tail %d), all in the graph after %.1f s; %d ids checked   load %s\n",
			r.Round, r.IngestSeconds, r.AckedWrites, r.ReadySeconds, r.ReadyCPUSeconds, r.SnapshotLoadSeconds, r.ReplayedVectors, mib(r.ReplayedBytes), r.ReplaySeconds, r.TailVectors, r.IndexedSeconds, r.Checked, r.Load)
	case "graceful":
		fmt.Printf("graceful restart: stopped in %.2f s, ready in %.2f s (snapshot load %.2f s, replayed %d vectors, tail %d)\n",
			r.StopSeconds, r.ReadySeconds, r.SnapshotLoadSeconds, r.ReplayedVectors, r.TailVectors)
	case "summary":
		fmt.Printf("time to ready after kill -9: p50 %.2f s, max %.2f s over %d rounds, at most %.2f s of CPU (%s)\n", r.ReadyP50Seconds, r.ReadyMaxSeconds, r.Rounds, r.ReadyCPUMaxSeconds, r.Note)
		fmt.Printf("  most vectors replayed %d, largest tail %d, all in the graph within %.1f s of the restart\n", r.ReplayedVectors, r.TailVectors, r.IndexedSeconds)
		fmt.Printf("  largest snapshot written %.0f MiB in %.2f s; %d writes acked, %d ids checked, none lost   load %s\n",
			mib(r.SnapshotBytes), r.SnapshotSeconds, r.AckedWrites, r.Checked, r.Load)
	}
}
