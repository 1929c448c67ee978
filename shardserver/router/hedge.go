package router

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// latencyWindow keeps the last windowSize latencies of one shard and, every
// recomputeEvery samples, recomputes the hedging threshold from them. Recording is a
// couple of atomics; the sort happens off the common path and never blocks a request
// (TryLock: a busy recomputation is simply skipped).
type latencyWindow struct {
	pct     float64 // percentile in (0, 100); 0 disables hedging
	samples [windowSize]atomic.Int64
	n       atomic.Uint64
	thresh  atomic.Int64 // ns; 0 until enough samples
	mu      sync.Mutex
	scratch []int64
}

const (
	windowSize     = 512
	recomputeEvery = 64
	// minSamples is how many latencies a shard needs before it hedges: a percentile of
	// a handful of samples would hedge far too often.
	minSamples = 64
)

func newLatencyWindow(pct float64) *latencyWindow {
	return &latencyWindow{pct: pct}
}

func (w *latencyWindow) record(d time.Duration) {
	if w == nil || w.pct <= 0 {
		return
	}
	n := w.n.Add(1)
	w.samples[(n-1)%windowSize].Store(int64(d))
	if n >= minSamples && n%recomputeEvery == 0 && w.mu.TryLock() {
		w.recompute(min(n, windowSize))
		w.mu.Unlock()
	}
}

func (w *latencyWindow) recompute(n uint64) {
	w.scratch = w.scratch[:0]
	for i := range n {
		w.scratch = append(w.scratch, w.samples[i].Load())
	}
	slices.Sort(w.scratch)
	idx := int(float64(len(w.scratch)-1) * w.pct / 100)
	w.thresh.Store(w.scratch[idx])
}

// hedgeAfter returns how long to wait before hedging, or 0 for never.
func (w *latencyWindow) hedgeAfter() time.Duration {
	if w == nil || w.pct <= 0 {
		return 0
	}
	return time.Duration(w.thresh.Load())
}
