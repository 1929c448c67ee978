package balance

import "sync/atomic"

// leastConn picks the replica with the fewest requests in flight from this router.
// Ties are broken by a rotating starting point, so an idle replica set is still shared.
type leastConn struct {
	base
	next atomic.Uint64
}

func (l *leastConn) Pick(exclude int) int {
	n := len(l.reps)
	if l.candidates(exclude) == 0 {
		return -1
	}
	start := int(l.next.Add(1) % uint64(n))
	best, bestLoad := -1, int64(0)
	for k := range n {
		i := (start + k) % n
		if i == exclude {
			continue
		}
		if load := l.reps[i].inflight.Load(); best < 0 || load < bestLoad {
			best, bestLoad = i, load
		}
	}
	return best
}
