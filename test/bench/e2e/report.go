package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
)

// Kinds of record.
const (
	kindConfig = "config" // the run's shape: data, index, processes
	kindLoad   = "load"   // the machine's load average, at the start and at the end
	kindUpsert = "upsert" // bulk load rate of a path
	kindRecall = "recall" // recall@k of a path against exact neighbours
	kindSearch = "search" // closed-loop search figures of a path at one concurrency
	kindRatio  = "ratio"  // one path's figure over another's
)

// Paths.
const (
	pathRouter = "router" // through the router, 2 shards x 2 replicas
	pathShard  = "shard"  // straight to shard 0's primary
	pathInproc = "inproc" // one in-process index of all the data
	// The data split over numShards in-process indexes as the router's slot table splits
	// it, each query searching them all and merging the top k: what sharding costs (more,
	// smaller walks) without any protocol, so router/split is the protocol's share.
	pathSplit = "split"
)

// record is one line of output; which fields are set depends on Kind.
type record struct {
	Kind string `json:"kind"`
	Path string `json:"path,omitempty"`

	// config
	Vectors    int    `json:"vectors,omitempty"`
	Dim        int    `json:"dim,omitempty"`
	K          int    `json:"k,omitempty"`
	Ef         int    `json:"ef,omitempty"`
	Shards     int    `json:"shards,omitempty"`
	Replicas   int    `json:"replicas,omitempty"`
	WALSync    string `json:"walSync,omitempty"`
	GOMAXPROCS int    `json:"gomaxprocs,omitempty"`
	// ServerProcs is the GOMAXPROCS given to the server processes (0: Go's default).
	ServerProcs int `json:"serverProcs,omitempty"`

	// load
	When  string  `json:"when,omitempty"`
	Load1 float64 `json:"load1,omitempty"`
	Load5 float64 `json:"load5,omitempty"`

	// upsert
	VectorsPerSecond           float64 `json:"vectorsPerSecond,omitempty"`
	ReplicatedVectorsPerSecond float64 `json:"replicatedVectorsPerSecond,omitempty"`

	// recall
	Recall float64 `json:"recall,omitempty"`

	// search
	Concurrency         int     `json:"concurrency,omitempty"`
	Queries             int     `json:"queries,omitempty"`
	QPS                 float64 `json:"qps,omitempty"`
	P50Ms               float64 `json:"p50Ms,omitempty"`
	P99Ms               float64 `json:"p99Ms,omitempty"`
	QueriesPerCPUSecond float64 `json:"queriesPerCPUSecond,omitempty"`
	// Of the HTTP paths: CPU microseconds per query of the router process and of the
	// shard processes together.
	RouterCPUMicros float64 `json:"routerCPUMicros,omitempty"`
	ShardsCPUMicros float64 `json:"shardsCPUMicros,omitempty"`
	// Of the router path: search requests the router sent to shard replicas per query
	// (2 shards: 2 without micro-batching), and searches each carried.
	ShardRequestsPerQuery   float64 `json:"shardRequestsPerQuery,omitempty"`
	SearchesPerShardRequest float64 `json:"searchesPerShardRequest,omitempty"`

	// ratio: Of is "a/b" (paths), Metric the figure compared.
	Of     string  `json:"of,omitempty"`
	Metric string  `json:"metric,omitempty"`
	Ratio  float64 `json:"ratio,omitempty"`
	Goal   string  `json:"goal,omitempty"`
}

func writeJSON(w io.Writer, recs []record) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // the goal ">= 0.5" stays readable
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// writeTable prints the records for people: one section per kind, in the order the
// records came.
func writeTable(w io.Writer, recs []record) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	section := ""
	head := func(kind, header string) {
		if section != kind {
			section = kind
			fmt.Fprintln(tw, header)
		}
	}
	f := func(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	for _, r := range recs {
		switch r.Kind {
		case kindConfig:
			tw.Flush()
			procs := "default"
			if r.ServerProcs > 0 {
				procs = strconv.Itoa(r.ServerProcs)
			}
			fmt.Fprintf(w, "e2e: %d vectors, dim %d, k %d, ef %d; router over %d shards x %d replicas (wal-sync %s, GOMAXPROCS %s); this process GOMAXPROCS %d\n",
				r.Vectors, r.Dim, r.K, r.Ef, r.Shards, r.Replicas, r.WALSync, procs, r.GOMAXPROCS)
			section = ""
		case kindLoad:
			tw.Flush()
			fmt.Fprintf(w, "load average at the %s: %.2f (1 min), %.2f (5 min)\n", r.When, r.Load1, r.Load5)
			section = ""
		case kindUpsert:
			head(r.Kind, "\nbulk upsert\tpath\tvectors/s\tuntil replicated\t")
			rep := "-"
			if r.ReplicatedVectorsPerSecond > 0 {
				rep = f(r.ReplicatedVectorsPerSecond, 0)
			}
			fmt.Fprintf(tw, "\t%s\t%s\t%s\t\n", r.Path, f(r.VectorsPerSecond, 0), rep)
		case kindRecall:
			head(r.Kind, "\nrecall@k\tpath\trecall\t")
			fmt.Fprintf(tw, "\t%s\t%s\t\n", r.Path, f(r.Recall, 4))
		case kindSearch:
			head(r.Kind, "\nsearch\tpath\tclients\tQPS\tp50 ms\tp99 ms\tqueries/CPU-s\tCPU us/query: router\tshards\tshard requests/query\t")
			cpuUs := func(v float64) string {
				if r.Path == pathInproc || r.Path == pathSplit {
					return "-"
				}
				return f(v, 0)
			}
			perQuery := "-"
			if r.ShardRequestsPerQuery > 0 {
				perQuery = f(r.ShardRequestsPerQuery, 2)
			}
			fmt.Fprintf(tw, "\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Path, r.Concurrency, f(r.QPS, 0), f(r.P50Ms, 3), f(r.P99Ms, 3),
				f(r.QueriesPerCPUSecond, 0), cpuUs(r.RouterCPUMicros), cpuUs(r.ShardsCPUMicros), perQuery)
		case kindRatio:
			head(r.Kind, "\nratio\tof\tmetric\tclients\tratio\tgoal\t")
			c := "-"
			if r.Concurrency > 0 {
				c = strconv.Itoa(r.Concurrency)
			}
			fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s\t%s\t\n", r.Of, r.Metric, c, f(r.Ratio, 3), r.Goal)
		}
	}
	return tw.Flush()
}
