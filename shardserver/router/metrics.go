package router

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/annshard/annshard/shardserver/balance"
)

// metrics are the router's Prometheus series, on a registry of its own so that several
// routers in one test process do not collide.
type metrics struct {
	reg         *prometheus.Registry
	policy      string
	requests    *prometheus.CounterVec   // op, code
	duration    *prometheus.HistogramVec // op
	replicaLat  *prometheus.HistogramVec // shard, replica
	selections  *prometheus.CounterVec   // shard, replica, policy
	hedges      prometheus.Counter
	retries     *prometheus.CounterVec // op
	cacheHits   prometheus.Counter
	cacheMisses prometheus.Counter
	batchSize   prometheus.Histogram
	// The series of successful searches, most of the requests, looked up once (at the
	// first, so that a series still appears with its first request).
	searchOK, batchOK func() opSeries
}

// opSeries are the request count and the latency of one operation and answer code.
type opSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// replicaMetrics are one replica's series, resolved once when its shard set is built so
// the request path does not look labels up.
type replicaMetrics struct {
	latency    prometheus.Observer
	selections prometheus.Counter
}

var latencyBuckets = []float64{.0005, .001, .002, .004, .008, .016, .032, .064, .128, .256, .512, 1.024, 2.048, 5}

func newMetrics(policy balance.Policy) *metrics {
	m := &metrics{
		reg:    prometheus.NewRegistry(),
		policy: string(policy),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "annshard_router_requests_total", Help: "Requests answered by the router, by operation and answer code.",
		}, []string{"op", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "annshard_router_request_duration_seconds", Help: "End-to-end request latency at the router.", Buckets: latencyBuckets,
		}, []string{"op"}),
		replicaLat: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "annshard_router_shard_request_duration_seconds", Help: "Latency of successful reads per shard and replica, as the router saw it.", Buckets: latencyBuckets,
		}, []string{"shard", "replica"}),
		selections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "annshard_router_replica_selections_total", Help: "Reads sent to each replica, by the balancing policy that chose it.",
		}, []string{"shard", "replica", "policy"}),
		hedges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "annshard_router_hedged_requests_total", Help: "Second reads sent because the first was slower than the hedging percentile.",
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "annshard_router_retries_total", Help: "Reads retried on another replica and writes retried after moved, not_primary or unavailable.",
		}, []string{"op"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "annshard_router_cache_hits_total", Help: "Searches answered from the result cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "annshard_router_cache_misses_total", Help: "Searches not found in the result cache.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "annshard_router_batch_size", Help: "Searches per micro-batch sent to a replica.", Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
	}
	// Every retry reason has a series from the start, so a dashboard's rate() of retries
	// shows 0 rather than no data before the first retry.
	for _, op := range []string{"search", "get", "upsert", "delete", "search_on_primary", "get_on_primary"} {
		m.retries.WithLabelValues(op)
	}
	series := func(op, code string) func() opSeries {
		return sync.OnceValue(func() opSeries {
			return opSeries{m.requests.WithLabelValues(op, code), m.duration.WithLabelValues(op)}
		})
	}
	m.searchOK, m.batchOK = series("search", "ok"), series("search_batch", "ok")
	m.reg.MustRegister(m.requests, m.duration, m.replicaLat, m.selections, m.hedges, m.retries,
		m.cacheHits, m.cacheMisses, m.batchSize,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe counts a request answered with code and its duration in seconds.
func (m *metrics) observe(op, code string, seconds float64) {
	var s opSeries
	switch {
	case code == "ok" && op == "search":
		s = m.searchOK()
	case code == "ok" && op == "search_batch":
		s = m.batchOK()
	default:
		s = opSeries{m.requests.WithLabelValues(op, code), m.duration.WithLabelValues(op)}
	}
	s.requests.Inc()
	s.duration.Observe(seconds)
}

func (m *metrics) forReplica(shard, name string) *replicaMetrics {
	return &replicaMetrics{
		latency:    m.replicaLat.WithLabelValues(shard, name),
		selections: m.selections.WithLabelValues(shard, name, m.policy),
	}
}
