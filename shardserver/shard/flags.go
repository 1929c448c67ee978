package shard

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/wal"
)

// Config is the whole configuration of a shard server; Main fills it from flags and
// ANNSHARD_* environment variables.
type Config struct {
	Listen         string
	DebugListen    string // Go's profiling endpoints (shardserver/debug); empty: off
	DataDir        string
	Dimension      int
	Metric         hnsw.Metric
	M              int
	EfConstruction int
	EfSearch       int
	Seed           int64
	// Quantization is how the HNSW graph stores vectors (None or Int8; Int8 keeps the
	// float32 vectors in a file in DataDir, through the page cache). Rerank re-ranks an
	// Int8 search's candidates by their exact float32 distances.
	Quantization hnsw.Quantization
	Rerank       bool

	WALSync         wal.SyncMode
	WALSyncInterval time.Duration
	SegmentBytes    int64

	// Token is the bearer token for writes and internal endpoints; empty turns auth off.
	Token string
	// Primary is the base URL of the primary; empty (with PrimaryPod empty too) means this
	// server is the primary.
	Primary string
	// PrimaryPod is the name of the primary's pod in Kubernetes mode (--index with a
	// replica's --pod-name): a replica watches that pod for its IP instead of using DNS.
	PrimaryPod string

	Limits
	SnapshotInterval time.Duration
	// SnapshotVectors and SnapshotWALBytes bound what a restart redoes: a snapshot is
	// written once the vectors written or inserted into the graph since the last one, or
	// the WAL bytes after it, reach them. SnapshotRecords counts records (0: off).
	SnapshotVectors  int64
	SnapshotWALBytes int64
	SnapshotRecords  int64
	MaxLag           uint64
	// PrimaryLossGrace is how long a replica that was caught up stays ready after losing
	// its primary's stream.
	PrimaryLossGrace time.Duration
	DrainTimeout     time.Duration
	RoutingFile      string
	ShardIndex       int
	// Index, when set, makes the shard watch the routing ConfigMap <Index>-routing in
	// Namespace (through Kubeconfig, or the in-cluster config).
	Index      string
	Namespace  string
	Kubeconfig string
}

// The default snapshot triggers. A restart reads the snapshot and the WAL after it,
// then serves while it inserts the WAL's vectors into the graph in the background, so
// these bound the background work after a crash (and the exact scan searches pay
// meanwhile), while a snapshot rewrites the whole index: they weigh the two.
const (
	defaultSnapshotVectors  = 100000
	defaultSnapshotWALBytes = 256 << 20
)

// envName is the environment fallback of a flag: ANNSHARD_ plus the flag in upper snake.
func envName(flagName string) string {
	return "ANNSHARD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses the serve flags; a flag not given falls back to its ANNSHARD_*
// variable in env. It returns flag.ErrHelp after printing usage for -h.
func parseFlags(args []string, env func(string) string, out io.Writer) (Config, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(out)
	var (
		c                          Config
		metric, walSync, tokenFile string
		quantization               string
		podName, service, primary  string
	)
	fs.StringVar(&c.Listen, "listen", ":8080", "address to serve the HTTP API on")
	fs.StringVar(&c.DebugListen, "debug-listen", "", "address to serve Go's profiling endpoints (/debug/pprof/) on, e.g. 127.0.0.1:6060; empty: off")
	fs.StringVar(&c.DataDir, "data-dir", "/data", "directory of the WAL and snapshots (a persistent volume)")
	fs.IntVar(&c.Dimension, "dimension", 0, "vector dimension (required; fixed for the life of the data)")
	fs.StringVar(&metric, "metric", "L2", "distance: L2, Cosine or InnerProduct")
	fs.StringVar(&quantization, "quantization", "None", "how the graph stores vectors: None (float32) or Int8 (a third of the memory; float32 vectors in a file in --data-dir)")
	fs.BoolVar(&c.Rerank, "rerank", true, "with --quantization=Int8: re-rank each search's candidates by exact float32 distance (exact results and distances)")
	fs.IntVar(&c.M, "m", 16, "HNSW links per node (layer 0 gets 2*m)")
	fs.IntVar(&c.EfConstruction, "ef-construction", 200, "HNSW candidate list size while inserting")
	fs.IntVar(&c.EfSearch, "ef-search", 64, "default HNSW candidate list size of a search (a request's ef overrides it)")
	fs.Int64Var(&c.Seed, "seed", 1, "seed of the HNSW level generator")
	fs.StringVar(&walSync, "wal-sync", "Always", "Always: fsync (group commit) before acknowledging a write; Interval: fsync on a timer")
	fs.DurationVar(&c.WALSyncInterval, "wal-sync-interval", 50*time.Millisecond, "fsync period with --wal-sync=Interval")
	fs.Int64Var(&c.SegmentBytes, "wal-segment-bytes", 64<<20, "WAL segment size, the unit of trimming")
	fs.StringVar(&tokenFile, "token-file", "", "file holding the bearer token for writes and internal endpoints (else $ANNSHARD_TOKEN; none: no auth)")
	fs.StringVar(&primary, "primary", "", "base URL of the primary; set on read replicas (else derived from --pod-name)")
	fs.StringVar(&podName, "pod-name", "", "StatefulSet pod name <sts>-<ordinal>: ordinal 0 is the primary, others replicate from <sts>-0.<service>")
	fs.StringVar(&service, "service", "", "headless Service of the StatefulSet (default: the StatefulSet name)")
	fs.StringVar(&c.Namespace, "namespace", "", "the pod's namespace: appended to the derived primary host, and where --index looks (default: the service account's)")
	fs.StringVar(&c.Index, "index", "", "AnnIndex name: watch the ConfigMap <index>-routing for this shard's slots (Kubernetes mode)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig for --index outside a cluster (default: in-cluster config)")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", 32<<20, "largest request body; over it -> 413")
	fs.IntVar(&c.MaxK, "max-k", 1000, "largest k of a search")
	fs.IntVar(&c.MaxEf, "max-ef", 4096, "largest ef of a search")
	fs.IntVar(&c.MaxBatch, "max-batch", 10000, "most vectors, ids or queries in one request")
	fs.DurationVar(&c.SnapshotInterval, "snapshot-interval", 5*time.Minute, "write a snapshot this often when there were writes")
	fs.Int64Var(&c.SnapshotVectors, "snapshot-vectors", defaultSnapshotVectors, "write a snapshot once this many vectors were written or inserted into the graph since the last one (0: off)")
	fs.Int64Var(&c.SnapshotWALBytes, "snapshot-wal-bytes", defaultSnapshotWALBytes, "write a snapshot once the WAL after the last one holds this many bytes (0: off)")
	fs.Int64Var(&c.SnapshotRecords, "snapshot-records", 0, "also write a snapshot after this many WAL records (0: off; a record is a batch, so vectors and bytes bound replay better)")
	fs.Uint64Var(&c.MaxLag, "max-lag", 1000, "a replica is ready only when at most this many records behind")
	fs.DurationVar(&c.PrimaryLossGrace, "primary-loss-grace", 30*time.Second, "a caught-up replica stays ready this long after losing its primary, so reads survive a primary restart")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 20*time.Second, "how long SIGTERM waits for in-flight requests")
	fs.StringVar(&c.RoutingFile, "routing-file", "", "routing table file (the routing ConfigMap mounted); re-read on change to set owned slots and epoch")
	fs.IntVar(&c.ShardIndex, "shard-index", 0, "this shard's number in the routing table (--routing-file or --index)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: shardserver serve [flags]\n\nRuns one replica of one shard. Every flag also reads ANNSHARD_<FLAG> (e.g. ANNSHARD_DATA_DIR).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := env(envName(f.Name)); v != "" && !given[f.Name] {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = errors.Join(envErr, fmt.Errorf("%s: %w", envName(f.Name), err))
			}
		}
	})
	if envErr != nil {
		return Config{}, envErr
	}
	var err error
	if c.Metric, err = hnsw.ParseMetric(metric); err != nil {
		return Config{}, fmt.Errorf("--metric: %w", err)
	}
	if c.Quantization, err = hnsw.ParseQuantization(quantization); err != nil {
		return Config{}, fmt.Errorf("--quantization: %w", err)
	}
	if c.WALSync, err = wal.ParseSyncMode(walSync); err != nil {
		return Config{}, fmt.Errorf("--wal-sync: %w", err)
	}
	if c.Dimension < 1 {
		return Config{}, errors.New("--dimension is required and must be positive")
	}
	if c.MaxBodyBytes < 1 || c.MaxBatch < 1 || c.MaxK < 1 || c.MaxEf < 1 {
		return Config{}, errors.New("--max-body-bytes, --max-batch, --max-k and --max-ef must be positive")
	}
	if c.Index != "" && c.RoutingFile != "" {
		return Config{}, errors.New("--index watches the routing ConfigMap: drop --routing-file")
	}
	c.Token = strings.TrimSpace(env("ANNSHARD_TOKEN"))
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return Config{}, fmt.Errorf("reading --token-file: %w", err)
		}
		if c.Token = strings.TrimSpace(string(b)); c.Token == "" {
			return Config{}, fmt.Errorf("--token-file %s is empty", tokenFile)
		}
	}
	c.Primary = primary
	if primary == "" && podName != "" && c.Index != "" {
		if c.PrimaryPod, err = PrimaryPod(podName); err != nil {
			return Config{}, err
		}
	} else if primary == "" && podName != "" {
		_, port, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return Config{}, fmt.Errorf("--listen: %w", err)
		}
		if c.Primary, err = DerivePrimary(podName, service, c.Namespace, port); err != nil {
			return Config{}, err
		}
	}
	return c, nil
}

// PrimaryPod returns the name of the primary's pod for a StatefulSet pod, or "" when the
// pod is the primary itself (ordinal 0). The StatefulSet name is the pod name without its
// "-<ordinal>" suffix; the primary is <sts>-0.
func PrimaryPod(podName string) (string, error) {
	cut := strings.LastIndexByte(podName, '-')
	if cut <= 0 || cut == len(podName)-1 || podName[cut-1] == '-' {
		return "", fmt.Errorf("pod name %q is not <statefulset>-<ordinal>", podName)
	}
	sts, ordText := podName[:cut], podName[cut+1:]
	ord, err := strconv.Atoi(ordText)
	if err != nil || ord < 0 || strconv.Itoa(ord) != ordText {
		return "", fmt.Errorf("pod name %q has no ordinal suffix", podName)
	}
	if ord == 0 {
		return "", nil
	}
	return sts + "-0", nil
}

// DerivePrimary returns the primary's base URL for a StatefulSet pod outside Kubernetes
// mode, or "" when the pod is the primary itself: the primary's pod reached through the
// headless Service (which defaults to the StatefulSet's own name).
func DerivePrimary(podName, service, namespace, port string) (string, error) {
	pod, err := PrimaryPod(podName)
	if err != nil || pod == "" {
		return "", err
	}
	sts := strings.TrimSuffix(pod, "-0")
	if service == "" {
		service = sts
	}
	host := sts + "-0." + service
	if namespace != "" {
		host += "." + namespace
	}
	if port == "" {
		port = "8080"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}
