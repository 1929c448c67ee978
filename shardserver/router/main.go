package router

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/annshard/annshard/shardserver/balance"
	"github.com/annshard/annshard/shardserver/debug"
	"github.com/annshard/annshard/shardserver/slots"
)

// Options is the router's whole configuration as given on the command line.
type Options struct {
	Config
	Listen      string
	DebugListen string // Go's profiling endpoints (shardserver/debug); empty: off
	RoutingFile string
	Index       string
	Namespace   string
	Kubeconfig  string
	Shards      string
	ShardPort   int
}

// ParseFlags parses the flags of `shardserver route`. It returns flag.ErrHelp after
// printing the usage for -h.
func ParseFlags(args []string, env func(string) string, out io.Writer) (Options, error) {
	fs := flag.NewFlagSet("route", flag.ContinueOnError)
	fs.SetOutput(out)
	var o Options
	var policy, tokenFile string
	fs.StringVar(&o.Listen, "listen", ":8080", "address to serve the API, /metrics, /healthz and /readyz on")
	fs.StringVar(&o.DebugListen, "debug-listen", "", "address to serve Go's profiling endpoints (/debug/pprof/) on, e.g. 127.0.0.1:6060; empty: off")
	fs.StringVar(&o.RoutingFile, "routing-file", "", "routing table file (slots.ConfigMapKey format); re-read when it changes")
	fs.StringVar(&o.Index, "index", "", "AnnIndex name: watch the ConfigMap <index>-routing and the shard Pods (Kubernetes mode)")
	fs.StringVar(&o.Namespace, "namespace", "", "namespace of the index (default: $POD_NAMESPACE, else the service account's)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig for running outside a cluster (default: in-cluster config)")
	fs.StringVar(&o.Shards, "shards", "", `static replicas "0=http://a:8080,http://b:8080;1=..." (first URL is the primary); without a table source the slots are spread evenly`)
	fs.IntVar(&o.ShardPort, "shard-port", 8080, "port of the shard servers when their Pods declare no container port named http")
	fs.StringVar(&policy, "policy", string(balance.Adaptive), "replica selection: RoundRobin, WeightedRoundRobin, LeastConnections, PowerOfTwoChoices or Adaptive")
	fs.StringVar(&tokenFile, "token-file", "", "file holding the bearer token for writes (else $ANNSHARD_TOKEN)")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Second, "deadline of one request, end to end")
	fs.Float64Var(&o.HedgePercentile, "hedge-percentile", 0, "hedge a read once it is slower than this percentile of the shard's recent latency (0 = off)")
	fs.IntVar(&o.CacheEntries, "cache-entries", 10000, "result cache size in entries (0 = off)")
	// On by default: make bench-balance measured +24% and +45% closed-loop throughput at 32
	// clients, and it adds no latency to a lone search (nothing outstanding: no wait).
	fs.IntVar(&o.BatchMax, "batch-max", 16, "micro-batch up to this many concurrent searches per replica (0 or 1 = off)")
	fs.DurationVar(&o.BatchWait, "batch-wait", 200*time.Microsecond, "longest wait for a micro-batch to fill, only while a batch to the replica is outstanding")
	fs.DurationVar(&o.LoadInterval, "load-interval", time.Second, "how often each replica's /v1/load is polled")
	fs.IntVar(&o.WriteAttempts, "write-attempts", 4, "tries of one write across moved / not_primary / unavailable answers")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: shardserver route [flags]\n\nRoutes the annshard API to the shards of one index.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.Policy, err = balance.ParsePolicy(policy); err != nil {
		return o, fmt.Errorf("--policy: %w", err)
	}
	switch {
	case o.Index == "" && o.Shards == "":
		return o, errors.New("give --index (Kubernetes) or --shards (static replicas)")
	case o.Index != "" && o.RoutingFile != "":
		return o, errors.New("--index watches the routing ConfigMap: drop --routing-file")
	case o.HedgePercentile < 0 || o.HedgePercentile >= 100:
		return o, fmt.Errorf("--hedge-percentile %g not in [0, 100)", o.HedgePercentile)
	case o.ShardPort < 1 || o.ShardPort > 65535:
		return o, fmt.Errorf("--shard-port %d out of range", o.ShardPort)
	}
	if o.Index != "" && o.Namespace == "" {
		o.Namespace = env("POD_NAMESPACE")
	}
	o.Token = strings.TrimSpace(env("ANNSHARD_TOKEN"))
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return o, fmt.Errorf("--token-file: %w", err)
		}
		o.Token = strings.TrimSpace(string(b))
	}
	return o, nil
}

// Main is `shardserver route`: it parses args, starts the sources of routing and
// replicas, and serves until ctx is cancelled, then drains.
func Main(ctx context.Context, args []string) error {
	o, err := ParseFlags(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	log := logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, nil))
	ctx = logr.NewContext(ctx, log)
	r, err := New(o.Config)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o.DebugListen != "" {
		if _, err := debug.Serve(ctx, o.DebugListen); err != nil {
			return err
		}
	}
	srcDone := make(chan error, 2)
	sources := 0
	if o.Shards != "" {
		eps, err := ParseStaticShards(o.Shards)
		if err != nil {
			return fmt.Errorf("--shards: %w", err)
		}
		r.SetEndpoints(eps)
		if o.RoutingFile == "" && o.Index == "" {
			r.SetTable(slots.Even(len(eps)))
		}
	}
	if o.RoutingFile != "" {
		fw, err := newFileWatcher(o.RoutingFile, r)
		if err != nil {
			return err
		}
		sources++
		go func() { srcDone <- fw.run(ctx) }()
	}
	if o.Index != "" {
		kw, err := newKubeWatcher(o.Kubeconfig, o.Namespace, o.Index, o.ShardPort, o.Shards == "", r)
		if err != nil {
			return err
		}
		sources++
		go func() { srcDone <- kw.run(ctx) }()
	}

	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	pollDone := make(chan struct{})
	go func() { r.Run(ctx); close(pollDone) }()
	log.Info("Router serving", "addr", ln.Addr().String(), "policy", o.Policy, "index", o.Index, "routingFile", o.RoutingFile)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("serve: %w", err)
	case err := <-srcDone:
		sources--
		runErr = err
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("shutdown: %w", err))
	}
	<-pollDone
	for range sources {
		if err := <-srcDone; err != nil && !errors.Is(err, context.Canceled) {
			runErr = errors.Join(runErr, err)
		}
	}
	log.Info("Router stopped")
	return runErr
}
