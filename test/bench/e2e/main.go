// Command e2e measures what the distributed path costs: a `shardserver route` process in
// front of 2 shards x 2 replicas (a primary and a replica streaming from it), all real
// processes on this machine, against the same data searched in one process.
//
// It reports, in one run:
//   - bulk upsert rate through the router (acknowledged, and until every replica holds
//     the data) against the in-process build rate of the HNSW core with GOMAXPROCS threads;
//   - recall@k of searches through the router and in-process, against exact neighbours
//     (a check that the distributed answer is not silently worse);
//   - closed-loop search QPS and p50/p99 at each -concurrency, on three paths:
//     router   through the router (fan-out to both shards, merge of the top k),
//     shard    the same queries straight to one shard's primary (half of the data),
//     inproc   the whole data in one in-process index, searched by as many goroutines
//     as there are clients;
//     split    the data split over 2 in-process indexes as the router's slot table
//     splits it, each query searching both and merging the top k: sharding without
//     any protocol;
//   - the ratios router/inproc and router/shard of QPS, and of queries per CPU-second
//     (the CPU of every server process, or of this process for inproc), which does not
//     depend on what else the machine runs. The goal is router/inproc QPS >= 0.5 at the
//     highest concurrency. router/inproc is the product of split/inproc (what more,
//     smaller walks cost: at equal ef they also find more) and router/split (what the
//     processes, hops and protocol cost).
//
// The machine is shared and its load drifts, so the paths take turns in short slices
// over -rounds rounds and each adds up its slices. The load average is printed at the
// start and at the end. The router runs with its production defaults (Adaptive policy,
// micro-batching on) except the result cache, which is off: the queries repeat.
//
// Usage: go run ./test/bench/e2e [-n 20000 -dim 128 -concurrency 1,4,16 -duration 6s -json]
// [-profile DIR: CPU profiles of the router and the shards during the router's first
// slice at the highest concurrency, through their --debug-listen endpoints]
//
// With -json it prints one object per line, each with a "kind": config, upsert, recall,
// search, ratio, load (see record).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	n, dim, queries, k, ef, m, efc int
	batch, writers                 int
	recallQueries                  int
	concurrency                    []int
	duration                       time.Duration
	rounds                         int
	warmup                         time.Duration
	walSync                        string
	serverProcs                    int // GOMAXPROCS of each server process; 0: Go's default
	bin                            string
	json                           bool
	seed                           uint64
	keep                           bool   // keep the work directory (logs) after the run
	profile                        string // directory for CPU profiles of the servers, or ""
}

func main() {
	var o options
	var conc string
	flag.IntVar(&o.n, "n", 20000, "vectors to load")
	flag.IntVar(&o.dim, "dim", 128, "dimension")
	flag.IntVar(&o.queries, "queries", 1000, "distinct query vectors (cycled)")
	flag.IntVar(&o.k, "k", 10, "k of each search")
	flag.IntVar(&o.ef, "ef", 64, "ef of each search")
	flag.IntVar(&o.m, "m", 16, "HNSW M")
	flag.IntVar(&o.efc, "efc", 200, "HNSW efConstruction")
	flag.IntVar(&o.batch, "batch", 500, "vectors per upsert request")
	flag.IntVar(&o.writers, "writers", 4, "concurrent upsert clients")
	flag.IntVar(&o.recallQueries, "recall-queries", 200, "queries whose recall is checked against exact neighbours")
	flag.StringVar(&conc, "concurrency", "1,4,16", "comma-separated numbers of closed-loop clients")
	flag.DurationVar(&o.duration, "duration", 6*time.Second, "measured time of each path at each concurrency (split over -rounds)")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds the paths take turns in")
	flag.DurationVar(&o.warmup, "warmup", 300*time.Millisecond, "unmeasured load before each path's first slice")
	flag.StringVar(&o.walSync, "wal-sync", "Always", "the shards' --wal-sync (Always is the default of a shard)")
	flag.IntVar(&o.serverProcs, "server-procs", 0, "GOMAXPROCS of every server process (0: Go's default, all cores or the cgroup's CPU limit, as in a pod)")
	flag.StringVar(&o.bin, "bin", "", "shardserver binary (default: go build one)")
	flag.BoolVar(&o.json, "json", false, "print one JSON object per line")
	flag.Uint64Var(&o.seed, "seed", 1, "data seed")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory with the processes' logs")
	flag.StringVar(&o.profile, "profile", "", "write CPU profiles of the router and of every shard process, taken during the router's first slice at the highest concurrency, into this directory (router.pprof, shard<k>-<r>.pprof)")
	flag.Parse()
	var err error
	if o.concurrency, err = parseInts(conc); err != nil {
		fmt.Fprintln(os.Stderr, "e2e bench: -concurrency:", err)
		os.Exit(2)
	}
	// SIGINT and SIGTERM cancel the run, so an interrupted run still stops its processes.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	recs, err := run(ctx, o, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e bench:", err)
		os.Exit(1)
	}
	if o.json {
		err = writeJSON(os.Stdout, recs)
	} else {
		err = writeTable(os.Stdout, recs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e bench:", err)
		os.Exit(1)
	}
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, v)
	}
	return out, nil
}
