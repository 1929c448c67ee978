package shard

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the Prometheus side of the load report. Each Server has its own registry,
// so tests can run several servers in one process.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "annshard_shard_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "annshard_shard_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"route"}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(m.requests, m.latency,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		gauge("annshard_shard_vectors", "Vectors stored.", func() float64 { return float64(s.store.Len()) }),
		gauge("annshard_shard_memory_bytes", "Estimated index memory.", func() float64 { return float64(s.store.MemoryBytes()) }),
		gauge("annshard_shard_wal_seq", "Sequence number of the last applied WAL record.", func() float64 { return float64(s.store.Applied()) }),
		gauge("annshard_shard_wal_bytes", "Size of the WAL segments.", func() float64 { return float64(s.store.Log().SizeBytes()) }),
		gauge("annshard_shard_replication_lag_records", "Records the replica is behind its primary (0 on a primary).", func() float64 {
			if s.repl == nil {
				return 0
			}
			return float64(s.repl.lag())
		}),
		gauge("annshard_shard_in_flight_requests", "Requests being served.", func() float64 { return float64(s.load.inFlight.Load()) }),
		gauge("annshard_shard_routing_epoch", "Routing epoch this shard knows.", func() float64 { return float64(s.slots.currentEpoch()) }),
		brokenGauge(s.store, brokenWAL), brokenGauge(s.store, brokenIndex),
		gauge("annshard_shard_broken_seq", "Sequence number of the WAL record the index failed to apply (0 while it has not).", func() float64 {
			if b := s.store.broken.Load(); b != nil {
				return float64(b.seq)
			}
			return 0
		}),
	)
	return m
}

// brokenGauge is 1 once the store stopped serving for cause (Store.Broken), else 0.
func brokenGauge(st *Store, cause string) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "annshard_shard_broken",
		Help:        "1 once the shard stopped serving until a restart: its WAL failed (cause wal) or its index refused a logged record (cause index).",
		ConstLabels: prometheus.Labels{"cause": cause}}, func() float64 {
		if b := st.broken.Load(); b != nil && b.cause == cause {
			return 1
		}
		return 0
	})
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush of the real writer (streams).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// instrument counts and times every request of route, and tracks in-flight requests.
func (s *Server) instrument(route string, h http.HandlerFunc) http.HandlerFunc {
	hist := s.metrics.latency.WithLabelValues(route)
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.load.inFlight.Add(1)
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			s.load.inFlight.Add(-1)
			if rec.code == 0 {
				rec.code = http.StatusOK
			}
			hist.Observe(time.Since(start).Seconds())
			s.metrics.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
		}()
		h(rec, r)
	}
}
