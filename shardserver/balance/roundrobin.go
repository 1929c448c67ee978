package balance

import "sync/atomic"

// roundRobin cycles through the replicas, skipping the excluded one. It ignores load
// entirely: the baseline every other policy is measured against.
type roundRobin struct {
	base
	next atomic.Uint64
}

func (r *roundRobin) Pick(exclude int) int {
	n := len(r.reps)
	if r.candidates(exclude) == 0 {
		return -1
	}
	i := int(r.next.Add(1)-1) % n
	if i == exclude {
		i = (i + 1) % n
	}
	return i
}
