package main

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// config is a parsed command line plus the knobs tests turn.
type config struct {
	base, query, gt string   // TEXMEX files, when not generating
	gen             *genSpec // generated dataset, instead of the files
	nq              int      // generated queries
	metric          metric
	k, m, efc       int
	efs             []int
	threads         int // goroutines of the parallel phases
	json            bool
	plot            string // -plot: where to draw the recall-QPS curve
	quant           string // -quant: "" (float32 only) or "int8" (float32 and int8 side by side)
	rerank          bool   // -rerank: also search the int8 index with exact re-ranking
	partitions      bool   // -partitions: also search partitions of 0.1 %, 1 %, 10 % and 50 % of the base

	// minMeasure is how long each throughput measurement runs at least: the query set is
	// repeated until it has passed, so that QPS on a small set is not one noisy blink.
	minMeasure time.Duration
	newIndex   indexFactory
}

// datasetInfo describes what was loaded, for the report's first line.
type datasetInfo struct {
	source    string
	n, dim    int
	queries   int
	gtSource  string
	gtSeconds float64 // time to compute the ground truth; 0 when read from a file
}

// buildReport is the build measurement; its JSON shape is part of the fixed interface.
type buildReport struct {
	Seconds1       float64 `json:"seconds1"`
	SecondsAll     float64 `json:"secondsAll"`
	BytesPerVector float64 `json:"bytesPerVector"`

	variant variant // which index; reported only with -quant
}

// efReport is one row of the ef sweep; its JSON shape is part of the fixed interface.
type efReport struct {
	Ef     int     `json:"ef"`
	Recall float64 `json:"recall"`
	QPS1   float64 `json:"qps1"`
	QPSAll float64 `json:"qpsAll"`
	P50us  float64 `json:"p50us"`
	P99us  float64 `json:"p99us"`

	// Reported only with -quant, where several indexes are compared in one run.
	variant variant
	qps1CPU float64 // queries per CPU-second of the process in the 1-thread pass; 0 if unknown
}

// variant is one index configuration of a -quant run.
type variant struct {
	quant  string // "float32" or "int8"
	rerank bool
}

func (v variant) String() string {
	if v.rerank {
		return v.quant + "+rerank"
	}
	return v.quant
}

// bruteReport is the exact-scan baseline.
type bruteReport struct {
	QPS1    float64
	Queries int // how many queries the measurement ran
}

// reporter receives the results as they are measured, so a long run shows progress.
type reporter interface {
	dataset(info datasetInfo, c *config) error
	build(b buildReport, c *config) error
	ef(r efReport, brute bruteReport, c *config) error
	brute(b bruteReport, c *config) error
	partition(r partitionReport, c *config) error
}

// execute runs the whole benchmark described by c, reporting to rep.
func execute(ctx context.Context, c *config, rep reporter) error {
	base, queries, info, err := loadDataset(c)
	if err != nil {
		return err
	}
	pbase, pqueries := c.metric.prepare(base), c.metric.prepare(queries)
	gt, err := loadGroundTruth(ctx, c, pbase, pqueries, &info)
	if err != nil {
		return err
	}
	if err := rep.dataset(info, c); err != nil {
		return err
	}

	// Every index is built first, then searched: with -quant, the float32 and int8
	// figures come from one run under the same load.
	builds := []variant{{quant: "float32"}}
	if c.quant == "int8" {
		builds = append(builds, variant{quant: "int8"})
	}
	idxs := make([]annIndex, len(builds))
	for i, v := range builds {
		idx, b, err := measureBuild(ctx, c, base, v)
		if err != nil {
			return err
		}
		idxs[i] = idx
		b.variant = v
		if err := rep.build(b, c); err != nil {
			return err
		}
	}
	// The baseline is measured before the sweep because every sweep row shows the ratio
	// to it; it is reported last, as the fixed JSON order wants.
	brute, err := measureBrute(ctx, c, pbase, pqueries)
	if err != nil {
		return err
	}
	type searched struct {
		idx annIndex
		v   variant
	}
	var sweeps []searched
	for i, v := range builds {
		sweeps = append(sweeps, searched{idxs[i], v})
		if v.quant == "int8" && c.rerank {
			sweeps = append(sweeps, searched{idxs[i], variant{quant: "int8", rerank: true}})
		}
	}
	for _, sw := range sweeps {
		if rr, ok := sw.idx.(reranker); ok {
			rr.SetRerank(sw.v.rerank)
		}
		for _, ef := range c.efs {
			r, err := measureSearch(ctx, c, sw.idx, queries, gt, ef)
			if err != nil {
				return err
			}
			r.variant = sw.v
			if err := rep.ef(r, brute, c); err != nil {
				return err
			}
		}
	}
	if c.partitions {
		for i, v := range builds {
			if rr, ok := idxs[i].(reranker); ok {
				rr.SetRerank(c.rerank)
			}
			if err := measurePartitions(ctx, c, idxs[i], v, pbase, queries, pqueries, rep); err != nil {
				return err
			}
		}
	}
	return rep.brute(brute, c)
}

// loadDataset generates or reads the base and query vectors.
func loadDataset(c *config) (base, queries *vectors, info datasetInfo, err error) {
	if c.gen != nil {
		g := c.gen
		base, queries = generate(*g, c.nq)
		info.source = fmt.Sprintf("generated clustered Gaussian n=%d dim=%d clusters=%d seed=%d", g.n, g.dim, g.clusters, g.seed)
	} else {
		if base, err = readVectors(c.base); err != nil {
			return nil, nil, info, fmt.Errorf("load base: %w", err)
		}
		if queries, err = readVectors(c.query); err != nil {
			return nil, nil, info, fmt.Errorf("load queries: %w", err)
		}
		if base.dim != queries.dim {
			return nil, nil, info, fmt.Errorf("load dataset: base dimension %d differs from query dimension %d", base.dim, queries.dim)
		}
		info.source = fmt.Sprintf("%s (base), %s (queries)", c.base, c.query)
	}
	if c.k > base.Len() {
		return nil, nil, info, fmt.Errorf("load dataset: k=%d exceeds the %d base vectors", c.k, base.Len())
	}
	info.n, info.dim, info.queries = base.Len(), base.dim, queries.Len()
	return base, queries, info, nil
}

// loadGroundTruth reads -gt and checks it against the dataset, or computes it exactly.
func loadGroundTruth(ctx context.Context, c *config, base, queries *vectors, info *datasetInfo) (*groundTruth, error) {
	if c.gt == "" {
		start := time.Now()
		gt, err := exactGroundTruth(ctx, base, queries, c.k, c.metric, c.threads)
		if err != nil {
			return nil, err
		}
		info.gtSeconds = time.Since(start).Seconds()
		info.gtSource = fmt.Sprintf("exact brute force on %d threads", c.threads)
		return gt, nil
	}
	gt, err := readGroundTruth(c.gt)
	if err != nil {
		return nil, fmt.Errorf("load ground truth: %w", err)
	}
	if err := checkGroundTruth(gt, queries.Len(), base.Len(), c.k); err != nil {
		return nil, fmt.Errorf("load ground truth %s: %w", c.gt, err)
	}
	info.gtSource = c.gt
	return gt, nil
}

// checkGroundTruth verifies that gt has a row per query, at least k columns, and only ids
// of base vectors, so that a ground truth for another dataset is refused rather than
// reported as a low recall.
func checkGroundTruth(gt *groundTruth, nq, n, k int) error {
	if gt.Len() != nq {
		return fmt.Errorf("%d rows for %d queries", gt.Len(), nq)
	}
	if gt.width < k {
		return fmt.Errorf("%d neighbours per query, fewer than k=%d", gt.width, k)
	}
	for i := range nq {
		for _, id := range gt.Row(i)[:k] {
			if id < 0 || int(id) >= n {
				return fmt.Errorf("query %d: neighbour id %d outside the %d base vectors", i, id, n)
			}
		}
	}
	return nil
}

// measureBuild builds the index twice, with all threads and then with one goroutine, and
// returns the single-threaded one: its graph, and so every recall figure, depends only on
// the seed and the data, not on how goroutines interleaved.
func measureBuild(ctx context.Context, c *config, base *vectors, v variant) (annIndex, buildReport, error) {
	var (
		b   buildReport
		err error
	)
	// The index of the first build is dropped at once so that it is garbage before the
	// second build is timed.
	var first annIndex
	if first, b.SecondsAll, err = buildIndex(ctx, c, base, c.threads, v); err != nil {
		return nil, b, fmt.Errorf("build with %d threads: %w", c.threads, err)
	}
	closeIndex(first)
	runtime.GC()
	idx, secs, err := buildIndex(ctx, c, base, 1, v)
	if err != nil {
		return nil, b, fmt.Errorf("build with 1 thread: %w", err)
	}
	b.Seconds1 = secs
	b.BytesPerVector = float64(idx.MemoryBytes()) / float64(base.Len())
	return idx, b, nil
}

// buildIndex inserts every base vector (key = its position in the base) on threads
// goroutines and reports the wall time.
func buildIndex(ctx context.Context, c *config, base *vectors, threads int, v variant) (annIndex, float64, error) {
	n := base.Len()
	idx, err := c.newIndex(indexParams{
		dim: base.dim, metric: c.metric, m: c.m, efConstruction: c.efc,
		efSearch: c.efs[0], seed: indexSeed(c), capacity: n, int8: v.quant == "int8",
	})
	if err != nil {
		return nil, 0, err
	}
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		failed   atomic.Bool
	)
	start := time.Now()
	for range threads {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				err := idx.Add(uint64(i), base.Row(i))
				if err == nil && i%1024 == 0 {
					err = ctx.Err()
				}
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("add vector %d: %w", i, err) })
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if firstErr != nil {
		return nil, 0, firstErr
	}
	if idx.Len() != n {
		return nil, 0, fmt.Errorf("index holds %d vectors after adding %d", idx.Len(), n)
	}
	return idx, secs, nil
}

// indexSeed is the graph's level seed: the -gen seed, so that a generated run is a pure
// function of its flags, or 1 for files.
func indexSeed(c *config) int64 {
	if c.gen != nil {
		return c.gen.seed
	}
	return 1
}

// measureSearch runs the sweep point ef: a warm-up pass that also gives the recall, then
// single-goroutine passes timed per query, then passes split over all threads.
func measureSearch(ctx context.Context, c *config, idx annIndex, queries *vectors, gt *groundTruth, ef int) (efReport, error) {
	r := efReport{Ef: ef}
	nq := queries.Len()
	s := idx.NewSearcher()
	keys := make([]uint64, 0, c.k)
	var (
		hits int
		err  error
	)
	for i := range nq {
		if keys, err = s.Search(keys, queries.Row(i), c.k, ef); err != nil {
			return r, fmt.Errorf("search query %d at ef=%d: %w", i, ef, err)
		}
		hits += hitsAt(keys, gt.Row(i), c.k)
	}
	// The mean of per-query hits/k, computed from the integer total so that it is exact
	// (1, not 0.9999999999999991).
	r.Recall = float64(hits) / float64(nq*c.k)

	lat := make([]time.Duration, 0, nq)
	cpu0 := cpuTime()
	start := time.Now()
	for elapsed := time.Duration(0); len(lat) == 0 || elapsed < c.minMeasure; elapsed = time.Since(start) {
		if err := ctx.Err(); err != nil {
			return r, fmt.Errorf("search at ef=%d: %w", ef, err)
		}
		for i := range nq {
			t := time.Now()
			keys, err = s.Search(keys, queries.Row(i), c.k, ef)
			lat = append(lat, time.Since(t))
			if err != nil {
				return r, fmt.Errorf("search query %d at ef=%d: %w", i, ef, err)
			}
		}
	}
	r.QPS1 = float64(len(lat)) / time.Since(start).Seconds()
	if cpu := cpuTime() - cpu0; cpu > 0 {
		r.qps1CPU = float64(len(lat)) / cpu.Seconds()
	}
	slices.Sort(lat)
	r.P50us = micros(percentile(lat, 0.50))
	r.P99us = micros(percentile(lat, 0.99))

	if r.QPSAll, err = measureParallel(ctx, c, idx, queries, ef); err != nil {
		return r, err
	}
	return r, nil
}

// measureParallel runs whole passes of the query set on c.threads goroutines, each with
// its own searcher, until c.minMeasure has passed, and returns queries per second.
func measureParallel(ctx context.Context, c *config, idx annIndex, queries *vectors, ef int) (float64, error) {
	nq := queries.Len()
	searchers := make([]searcher, c.threads)
	for t := range searchers {
		searchers[t] = idx.NewSearcher()
	}
	var (
		done     int
		firstErr error
		mu       sync.Mutex
	)
	start := time.Now()
	for elapsed := time.Duration(0); done == 0 || elapsed < c.minMeasure; elapsed = time.Since(start) {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("parallel search at ef=%d: %w", ef, err)
		}
		var (
			next atomic.Int64
			wg   sync.WaitGroup
		)
		for _, s := range searchers {
			wg.Go(func() {
				keys := make([]uint64, 0, c.k)
				for {
					i := int(next.Add(1) - 1)
					if i >= nq {
						return
					}
					var err error
					if keys, err = s.Search(keys, queries.Row(i), c.k, ef); err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = fmt.Errorf("parallel search query %d at ef=%d: %w", i, ef, err)
						}
						mu.Unlock()
						next.Store(int64(nq))
						return
					}
				}
			})
		}
		wg.Wait()
		if firstErr != nil {
			return 0, firstErr
		}
		done += nq
	}
	return float64(done) / time.Since(start).Seconds(), nil
}

// measureBrute times the exact scan on one goroutine, with the index's own distance
// kernels so the HNSW/brute ratio compares search strategies, not kernels. A scan of a
// large base is slow, so it runs queries in order only until c.minMeasure has passed (at
// least one, at most one pass) and divides by the time those took: a rate, not an
// extrapolated total. (The ground truth uses the package's own scalar scan instead, so
// recall is checked against code independent of the index.)
func measureBrute(ctx context.Context, c *config, base, queries *vectors) (bruteReport, error) {
	var b bruteReport
	dist, err := hnswDistance(c.metric)
	if err != nil {
		return b, fmt.Errorf("brute-force scan: %w", err)
	}
	top := make([]neighbour, 0, c.k)
	start := time.Now()
	for i := range queries.Len() {
		if err := ctx.Err(); err != nil {
			return b, fmt.Errorf("brute-force scan: %w", err)
		}
		top = bruteForce(top, base, queries.Row(i), c.k, dist)
		b.Queries++
		if time.Since(start) >= c.minMeasure {
			break
		}
	}
	b.QPS1 = float64(b.Queries) / time.Since(start).Seconds()
	return b, nil
}

// percentile returns the nearest-rank p-quantile of sorted, which must not be empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
