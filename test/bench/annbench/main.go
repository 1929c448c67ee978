package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// defaultMinMeasure is how long each throughput figure is measured at least.
const defaultMinMeasure = time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	c, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "annbench: %v\n", err)
		os.Exit(2)
	}
	var rep reporter = newReporter(c, os.Stdout)
	var pr *plotReporter
	if c.plot != "" {
		pr = &plotReporter{next: rep}
		rep = pr
	}
	if err := execute(ctx, c, rep); err != nil {
		fmt.Fprintf(os.Stderr, "annbench: %v\n", err)
		os.Exit(1)
	}
	if pr != nil {
		if err := pr.write(c.plot, c); err != nil {
			fmt.Fprintf(os.Stderr, "annbench: %v\n", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "annbench: wrote %s\n", c.plot)
	}
}

// parseFlags turns the command line into a config, refusing combinations that would
// measure something other than what was asked. Usage goes to usageOut.
func parseFlags(args []string, usageOut io.Writer) (*config, error) {
	fs := flag.NewFlagSet("annbench", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	c := &config{minMeasure: defaultMinMeasure, newIndex: newHNSW}
	base := fs.String("base", "", "base vectors, TEXMEX `file` (.fvecs float32, .bvecs uint8)")
	query := fs.String("query", "", "query vectors, TEXMEX `file` (.fvecs or .bvecs)")
	gt := fs.String("gt", "", "ground truth, TEXMEX .ivecs `file`; computed exactly when absent")
	gen := fs.String("gen", "", "generate a clustered Gaussian dataset `n,dim,clusters,seed` instead of reading files")
	nq := fs.Int("nq", 1000, "number of generated queries (with -gen)")
	k := fs.Int("k", 10, "neighbours per query (recall@k)")
	m := fs.Int("m", 16, "HNSW M: links per node (2·M at layer 0)")
	efc := fs.Int("efc", 200, "HNSW efConstruction")
	efs := fs.String("ef", "10,20,40,80", "comma-separated ef `values` to sweep")
	threads := fs.Int("threads", 0, "goroutines for the parallel build, all-core QPS and ground truth (0 = all cores)")
	metricName := fs.String("metric", "L2", "distance: L2 (squared), InnerProduct or Cosine (both 1 - dot)")
	jsonOut := fs.Bool("json", false, "print only JSON, one object per line")
	quant := fs.String("quant", "", "also build an `int8` quantized index and report it beside float32, in one run")
	rerank := fs.Bool("rerank", false, "with -quant int8: also search the int8 index with exact float32 re-ranking")
	partitions := fs.Bool("partitions", false, "also search partitions of 0.1 %, 1 %, 10 % and 50 % of the base: the planned search against an exact scan and a filtered walk")
	plotOut := fs.String("plot", "", "also draw the recall-QPS curve with the brute-force line to this `file` (.svg, .png or .pdf)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var err error
	if set["gen"] {
		if *base != "" || *query != "" || *gt != "" {
			return nil, errors.New("-gen excludes -base, -query and -gt")
		}
		if c.gen, err = parseGen(*gen); err != nil {
			return nil, fmt.Errorf("parse -gen: %w", err)
		}
		if *nq <= 0 {
			return nil, fmt.Errorf("-nq must be positive, got %d", *nq)
		}
	} else {
		if *base == "" || *query == "" {
			return nil, errors.New("need -base and -query files, or -gen n,dim,clusters,seed")
		}
		if set["nq"] {
			return nil, errors.New("-nq applies to -gen only; the query file sets the queries")
		}
	}
	if c.efs, err = parseEfs(*efs); err != nil {
		return nil, fmt.Errorf("parse -ef: %w", err)
	}
	if c.metric, err = parseMetric(*metricName); err != nil {
		return nil, fmt.Errorf("parse -metric: %w", err)
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"k", *k}, {"m", *m}, {"efc", *efc}} {
		if p.v <= 0 {
			return nil, fmt.Errorf("-%s must be positive, got %d", p.name, p.v)
		}
	}
	if *threads < 0 {
		return nil, fmt.Errorf("-threads must be 0 (all cores) or positive, got %d", *threads)
	}
	c.base, c.query, c.gt = *base, *query, *gt
	c.nq, c.k, c.m, c.efc, c.json = *nq, *k, *m, *efc, *jsonOut
	c.threads = *threads
	switch strings.ToLower(*quant) {
	case "", "none":
	case "int8":
		c.quant = "int8"
	default:
		return nil, fmt.Errorf("-quant %q: want int8 (or none)", *quant)
	}
	if *rerank && c.quant == "" {
		return nil, errors.New("-rerank needs -quant int8")
	}
	c.rerank = *rerank
	c.partitions = *partitions
	if c.quant != "" && *plotOut != "" {
		return nil, errors.New("-plot draws one index: leave out -quant")
	}
	if c.plot = *plotOut; c.plot != "" {
		if err := checkPlotPath(c.plot); err != nil {
			return nil, err
		}
	}
	if c.threads == 0 {
		c.threads = runtime.GOMAXPROCS(0)
	}
	return c, nil
}

// parseGen parses n,dim,clusters,seed.
func parseGen(s string) (*genSpec, error) {
	f := strings.Split(s, ",")
	if len(f) != 4 {
		return nil, fmt.Errorf("%q: want n,dim,clusters,seed", s)
	}
	var v [3]int
	for i, name := range []string{"n", "dim", "clusters"} {
		x, err := strconv.Atoi(strings.TrimSpace(f[i]))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if x <= 0 {
			return nil, fmt.Errorf("%s must be positive, got %d", name, x)
		}
		v[i] = x
	}
	seed, err := strconv.ParseInt(strings.TrimSpace(f[3]), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	if v[0]*v[1] > 1<<31 {
		return nil, fmt.Errorf("n×dim = %d×%d is too large to generate", v[0], v[1])
	}
	return &genSpec{n: v[0], dim: v[1], clusters: v[2], seed: seed}, nil
}

// parseEfs parses a comma-separated list of positive ef values, kept in the given order.
func parseEfs(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		ef, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		if ef <= 0 {
			return nil, fmt.Errorf("%q: ef must be positive, got %d", s, ef)
		}
		out = append(out, ef)
	}
	return out, nil
}

func newReporter(c *config, w io.Writer) reporter {
	if c.json {
		return jsonReporter{json.NewEncoder(w)}
	}
	return &tableReporter{w: w}
}

// jsonReporter prints the fixed machine-readable lines and nothing else.
type jsonReporter struct{ enc *json.Encoder }

func (j jsonReporter) dataset(datasetInfo, *config) error { return nil }

func (j jsonReporter) build(b buildReport, c *config) error {
	if c.quant != "" {
		type quantBuild struct {
			buildReport
			Quant string `json:"quant"`
		}
		return j.enc.Encode(struct {
			Build quantBuild `json:"build"`
		}{quantBuild{b, b.variant.quant}})
	}
	return j.enc.Encode(struct {
		Build buildReport `json:"build"`
	}{b})
}

func (j jsonReporter) ef(r efReport, _ bruteReport, c *config) error {
	if c.quant != "" {
		return j.enc.Encode(struct {
			efReport
			Quant   string  `json:"quant"`
			Rerank  bool    `json:"rerank"`
			QPS1CPU float64 `json:"qps1Cpu"`
		}{r, r.variant.quant, r.variant.rerank, r.qps1CPU})
	}
	return j.enc.Encode(r)
}

func (j jsonReporter) partition(r partitionReport, _ *config) error {
	return j.enc.Encode(struct {
		Partition partitionReport `json:"partition"`
	}{r})
}

func (j jsonReporter) brute(b bruteReport, _ *config) error {
	return j.enc.Encode(struct {
		QPS1 float64 `json:"bruteQps1"`
	}{b.QPS1})
}

// tableReporter prints for people, one line as soon as each figure is known.
type tableReporter struct {
	w          io.Writer
	header     bool
	partHeader bool
}

func (t *tableReporter) dataset(info datasetInfo, c *config) error {
	_, err := fmt.Fprintf(t.w, "dataset  %s\n         %d base vectors of dimension %d, %d queries, metric %s, k=%d, %d threads\n",
		info.source, info.n, info.dim, info.queries, c.metric, c.k, c.threads)
	if err == nil {
		truth := info.gtSource
		if info.gtSeconds > 0 {
			truth += fmt.Sprintf(" (%.2f s)", info.gtSeconds)
		}
		_, err = fmt.Fprintf(t.w, "truth    %s\n", truth)
	}
	return err
}

func (t *tableReporter) build(b buildReport, c *config) error {
	if c.quant != "" {
		if _, err := fmt.Fprintf(t.w, "%-8s ", b.variant); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(t.w, "build    M=%d efConstruction=%d: %.2f s on 1 thread, %.2f s on %d threads (%.2fx); %.1f bytes/vector\n",
		c.m, c.efc, b.Seconds1, b.SecondsAll, c.threads, b.Seconds1/b.SecondsAll, b.BytesPerVector)
	return err
}

func (t *tableReporter) ef(r efReport, brute bruteReport, c *config) error {
	if c.quant != "" {
		return t.variantEf(r, brute, c)
	}
	if !t.header {
		t.header = true
		if _, err := fmt.Fprintf(t.w, "search   on the 1-thread build; each QPS measured over at least %v\n%8s %10s %12s %12s %10s %10s %10s\n",
			c.minMeasure, "ef", fmt.Sprintf("recall@%d", c.k), "QPS 1 thr", fmt.Sprintf("QPS %d thr", c.threads), "p50 µs", "p99 µs", "vs brute"); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(t.w, "%8d %10.4f %12.0f %12.0f %10.1f %10.1f %9.1fx\n",
		r.Ef, r.Recall, r.QPS1, r.QPSAll, r.P50us, r.P99us, r.QPS1/brute.QPS1)
	return err
}

// variantEf is a row of a -quant run: which index, and queries per CPU-second beside
// the wall-clock rates (the fairer figure on a shared, loaded machine).
func (t *tableReporter) variantEf(r efReport, brute bruteReport, c *config) error {
	if !t.header {
		t.header = true
		if _, err := fmt.Fprintf(t.w, "search   on the 1-thread builds; each QPS measured over at least %v\n%-15s %6s %10s %12s %12s %12s %10s %10s %10s\n",
			c.minMeasure, "index", "ef", fmt.Sprintf("recall@%d", c.k), "QPS 1 thr", "QPS/CPU-s", fmt.Sprintf("QPS %d thr", c.threads), "p50 µs", "p99 µs", "vs brute"); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(t.w, "%-15s %6d %10.4f %12.0f %12.0f %12.0f %10.1f %10.1f %9.1fx\n",
		r.variant, r.Ef, r.Recall, r.QPS1, r.qps1CPU, r.QPSAll, r.P50us, r.P99us, r.QPS1/brute.QPS1)
	return err
}

func (t *tableReporter) partition(r partitionReport, c *config) error {
	if !t.partHeader {
		t.partHeader = true
		if _, err := fmt.Fprintf(t.w, "partitions  %d queries each; the planned search against an exact scan of the partition and a filtered walk (ef/share); 1 thread, QPS per wall second / per CPU-second\n%-8s %7s %7s %5s %8s %10s %18s %18s %11s %18s\n",
			partitionQueries, "index", "share", "keys", "ef", "scanned", fmt.Sprintf("recall@%d", c.k), "planned QPS", "scan QPS", "walk recall", "walk QPS"); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(t.w, "%-8s %6.1f%% %7d %5d %7.0f%% %10.4f %8.0f / %7.0f %8.0f / %7.0f %11.4f %8.0f / %7.0f\n",
		r.Quant, 100*r.Share, r.Keys, r.Ef, 100*r.Scanned, r.Recall, r.QPS1, r.QPS1CPU, r.ScanQPS1, r.ScanQPSCPU, r.WalkRecall, r.WalkQPS1, r.WalkQPSCPU)
	return err
}

func (t *tableReporter) brute(b bruteReport, _ *config) error {
	_, err := fmt.Fprintf(t.w, "brute    %.1f QPS on 1 thread (exact scan of the whole base, %d queries timed)\n", b.QPS1, b.Queries)
	return err
}
