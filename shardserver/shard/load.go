package shard

import (
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

const (
	qpsWindow  = 10   // seconds of per-second query counts kept
	latSamples = 2048 // recent query latencies the percentiles are taken over
)

// loadTracker measures the query load the router and the operator act on. Counting is a
// short mutex section per query; the report does the sorting.
type loadTracker struct {
	mu      sync.Mutex
	counts  [qpsWindow + 1]uint64 // ring by unix second
	seconds [qpsWindow + 1]int64
	lat     [latSamples]float64 // milliseconds, ring
	latN    int

	inFlight    atomic.Int64
	waiting     atomic.Int64
	slotQueries [slots.Count]atomic.Uint64
}

// observe records one finished query that took d, ending at now.
func (t *loadTracker) observe(now time.Time, d time.Duration) {
	sec := now.Unix()
	i := int(sec % int64(len(t.counts)))
	t.mu.Lock()
	if t.seconds[i] != sec {
		t.seconds[i], t.counts[i] = sec, 0
	}
	t.counts[i]++
	t.lat[t.latN%latSamples] = float64(d) / float64(time.Millisecond)
	t.latN++
	t.mu.Unlock()
}

// rates returns the queries per second of the last complete second and the mean over
// the last qpsWindow complete seconds.
func (t *loadTracker) rates(now time.Time) (qps1, qps10 float64) {
	sec := now.Unix()
	t.mu.Lock()
	defer t.mu.Unlock()
	var sum uint64
	for back := int64(1); back <= qpsWindow; back++ {
		s := sec - back
		i := int(s % int64(len(t.counts)))
		if t.seconds[i] != s {
			continue
		}
		if back == 1 {
			qps1 = float64(t.counts[i])
		}
		sum += t.counts[i]
	}
	return qps1, float64(sum) / qpsWindow
}

// percentiles returns p50 and p99 of the recent latencies in milliseconds.
func (t *loadTracker) percentiles() (p50, p99 float64) {
	t.mu.Lock()
	n := min(t.latN, latSamples)
	xs := slices.Clone(t.lat[:n])
	t.mu.Unlock()
	if n == 0 {
		return 0, 0
	}
	slices.Sort(xs)
	return xs[(n-1)*50/100], xs[(n-1)*99/100]
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// loadReport assembles GET /v1/load, with the per-slot counters when withSlots.
func (s *Server) loadReport(now time.Time, withSlots bool) client.LoadReport {
	q1, q10 := s.load.rates(now)
	p50, p99 := s.load.percentiles()
	rep := client.LoadReport{
		QPS1s: q1, QPS10s: q10,
		InFlight:     int(s.load.inFlight.Load()),
		QueueDepth:   int(s.load.waiting.Load()),
		LatencyP50Ms: p50, LatencyP99Ms: p99,
		CPUSeconds:  cpuSeconds(),
		Vectors:     s.store.Len(),
		MemoryBytes: s.store.MemoryBytes(),
		WALSeq:      s.store.Applied(),
		Role:        client.RolePrimary,
		Ready:       s.ready(),
		Epoch:       s.slots.currentEpoch(),
		Schema:      &s.schema.Schema,
	}
	rep.Unindexed = s.store.Unindexed()
	recovery, snap := s.store.Recovery()
	rep.Recovery, rep.LastSnapshot = &recovery, snap
	if s.repl != nil {
		rep.Role = client.RoleReplica
		rep.ReplicationLagRecords = s.repl.lag()
	}
	if !withSlots {
		return rep
	}
	rep.SlotQueries, rep.SlotWrites = map[int]uint64{}, map[int]uint64{}
	for i := range slots.Count {
		if n := s.load.slotQueries[i].Load(); n > 0 {
			rep.SlotQueries[i] = n
		}
		if n := s.store.slotWrites[i].Load(); n > 0 {
			rep.SlotWrites[i] = n
		}
	}
	return rep
}
