package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/annshard/annshard/shardserver/debug"
	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/kube"
	"github.com/annshard/annshard/shardserver/wal"
)

// Server is one shard replica: its Store, slot ownership, load tracking and, on a read
// replica, the replicator that follows the primary.
type Server struct {
	cfg       Config
	store     *Store
	slots     *slotState
	load      loadTracker
	metrics   *metrics
	repl      *replicator // nil on the primary
	schema    schema
	searchSem chan struct{}
	mux       *http.ServeMux
	// streams is cancelled when shutdown starts, ending long-lived replication and slot
	// streams, which http.Server.Shutdown would otherwise wait for forever.
	streams     context.Context
	stopStreams context.CancelFunc
	started     atomic.Bool
	// kube is set with --index: the routing ConfigMap is watched through it.
	kube          kubernetes.Interface
	kubeNamespace string
	closeOnce     sync.Once
	closeErr      error

	// Import jobs (imports.go): importMu orders starting and stopping their goroutines,
	// importWG waits for them on Close.
	importMu sync.Mutex
	importWG sync.WaitGroup
	// holds are the WAL positions slot streams still need (source side of a move).
	holds walHolds
}

// New recovers the store in cfg.DataDir and builds the server; Run serves it.
func New(cfg Config) (*Server, error) {
	store, err := OpenStore(StoreConfig{
		DataDir: cfg.DataDir,
		Index: hnsw.Config{Dim: cfg.Dimension, Metric: cfg.Metric, M: cfg.M,
			EfConstruction: cfg.EfConstruction, EfSearch: cfg.EfSearch, Seed: cfg.Seed,
			Quantization: cfg.Quantization, Rerank: cfg.Rerank, VectorDir: cfg.DataDir},
		WAL: wal.Options{Sync: cfg.WALSync, SyncInterval: cfg.WALSyncInterval, SegmentBytes: cfg.SegmentBytes},
	})
	if err != nil {
		return nil, err
	}
	st, err := loadSlots(filepath.Join(cfg.DataDir, "slots.json"))
	if err != nil {
		store.Close()
		return nil, err
	}
	s := &Server{
		cfg: cfg, store: store, slots: st,
		schema:    newSchema(cfg.Dimension, cfg.Metric, cfg.Limits),
		searchSem: make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
	s.streams, s.stopStreams = context.WithCancel(context.Background())
	if cfg.Primary != "" || cfg.PrimaryPod != "" {
		s.repl = newReplicator(cfg.Primary, cfg.Token, store, cfg.MaxLag, cfg.PrimaryLossGrace)
	}
	st.visible = store.SetVisible
	store.SetVisible(st.owned)
	store.retainFrom = s.holds.oldest
	if cfg.Index != "" {
		if s.kube, s.kubeNamespace, err = kube.Client(cfg.Kubeconfig, cfg.Namespace); err != nil {
			store.Close()
			return nil, err
		}
	}
	s.metrics = newMetrics(s)
	s.routes()
	s.resumeImports()
	return s, nil
}

// primaryURL is the primary's base URL as this server knows it; "" on the primary.
func (s *Server) primaryURL() string {
	if s.repl == nil {
		return ""
	}
	return s.repl.primaryURL()
}

// Handler is the server's HTTP API.
func (s *Server) Handler() http.Handler { return s.mux }

// ready reports whether the server should get traffic: started, and on a replica,
// connected to the primary and at most MaxLag records behind.
func (s *Server) ready() bool {
	if !s.started.Load() || s.store.Broken() != nil {
		return false
	}
	return s.repl == nil || s.repl.ready()
}

// Run serves on ln until ctx is cancelled, then shuts down gracefully: stop accepting,
// drain in-flight requests, stop replication, write a snapshot, flush and close the WAL.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	start := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(bg) }()
	}
	start(s.snapshotLoop)
	if s.repl != nil {
		start(s.repl.run)
	}
	if s.cfg.RoutingFile != "" {
		start(func(ctx context.Context) { s.watchRoutingFile(ctx, time.Second) })
	}
	if s.kube != nil {
		start(func(ctx context.Context) {
			if err := s.watchRoutingConfigMap(ctx, s.kube, s.kubeNamespace); err != nil {
				slog.Error("Routing ConfigMap watch failed", "err", err)
			}
		})
		if s.repl != nil && s.cfg.PrimaryPod != "" {
			start(func(ctx context.Context) {
				if err := s.watchPrimaryPod(ctx, s.kube, s.kubeNamespace, ln.Addr()); err != nil {
					slog.Error("Primary pod watch failed", "err", err)
				}
			})
		}
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	s.started.Store(true)
	slog.Info("Shard server serving", "addr", ln.Addr().String(), "vectors", s.store.Len(),
		"seq", s.store.Applied(), "primary", s.primaryURL())

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("serving: %w", err)
	}
	s.started.Store(false)
	slog.Info("Shutting down: draining requests", "inFlight", s.load.inFlight.Load())
	s.stopStreams()
	drain, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	if serr := hs.Shutdown(drain); serr != nil {
		err = errors.Join(err, fmt.Errorf("draining requests: %w", serr))
	}
	cancel()
	stopBG()
	wg.Wait()
	err = errors.Join(err, s.Close())
	slog.Info("Shut down", "seq", s.store.Applied(), "vectors", s.store.Len(), "err", err)
	return err
}

// Close writes a final snapshot and closes the store; Run calls it on shutdown.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.stopStreams()
		s.importWG.Wait()
		if err := s.store.Snapshot(); err != nil {
			s.closeErr = err
		}
		s.closeErr = errors.Join(s.closeErr, s.store.Close())
	})
	return s.closeErr
}

// snapshotLoop writes a snapshot when what a restart would redo (the store's
// SinceSnapshot) reaches a threshold, and every SnapshotInterval when there were writes.
// It looks at once on start: a recovery that replayed more than a threshold is
// snapshotted right away, so the next restart does not replay it again.
func (s *Server) snapshotLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		if s.snapshotDue(s.store.SinceSnapshot(), time.Since(last)) {
			start := time.Now()
			if err := s.store.Snapshot(); err != nil {
				slog.Error("Snapshot failed", "err", err)
			} else if _, snap := s.store.Recovery(); snap != nil && !snap.Time.Before(start) {
				last = time.Now()
				slog.Info("Snapshot written", "seq", snap.Seq, "bytes", snap.Bytes, "vectors", snap.Vectors,
					"tailVectors", snap.TailVectors, "seconds", snap.Seconds)
			} else {
				last = time.Now() // nothing new to write
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// snapshotDue applies the snapshot triggers to the work since the last snapshot, age ago.
func (s *Server) snapshotDue(c ReplayCost, age time.Duration) bool {
	switch {
	case (c.Records == 0 && c.Indexed == 0) || s.store.Broken() != nil:
		// A broken store writes no snapshot: it would outlive the log it trims.
		return false
	case s.cfg.SnapshotVectors > 0 && max(c.Vectors, c.Indexed) >= s.cfg.SnapshotVectors,
		s.cfg.SnapshotWALBytes > 0 && c.WALBytes >= s.cfg.SnapshotWALBytes,
		s.cfg.SnapshotRecords > 0 && c.Records >= s.cfg.SnapshotRecords:
		return true
	}
	return age >= s.cfg.SnapshotInterval
}

// Main is `shardserver serve`: it parses flags (and ANNSHARD_* variables), recovers the
// data directory and serves until ctx is cancelled (SIGTERM), then shuts down gracefully.
func Main(ctx context.Context, args []string) error {
	cfg, err := parseFlags(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, nil)))
	if cfg.DebugListen != "" {
		if _, err := debug.Serve(ctx, cfg.DebugListen); err != nil {
			return err
		}
	}
	s, err := New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return errors.Join(fmt.Errorf("listening on %s: %w", cfg.Listen, err), s.Close())
	}
	return s.Run(ctx, ln)
}
