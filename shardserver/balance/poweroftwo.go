package balance

import "math"

// powerOfTwo samples two distinct replicas at random and takes the less loaded one
// (in flight from this router plus the replica's reported queue). It avoids the herd
// that LeastConnections causes when many routers see the same stale minimum.
type powerOfTwo struct {
	base
}

func (p *powerOfTwo) Pick(exclude int) int {
	m := p.candidates(exclude)
	switch m {
	case 0:
		return -1
	case 1:
		for i := range p.reps {
			if i != exclude {
				return i
			}
		}
	}
	// Draw two distinct ranks among the m candidates, then map ranks to indexes by
	// skipping the excluded replica.
	a := p.rng.intn(m)
	b := p.rng.intn(m - 1)
	if b >= a {
		b++
	}
	a, b = p.skip(a, exclude), p.skip(b, exclude)
	if p.load(b) < p.load(a) {
		return b
	}
	return a
}

func (p *powerOfTwo) skip(rank, exclude int) int {
	if p.valid(exclude) && rank >= exclude {
		return rank + 1
	}
	return rank
}

func (p *powerOfTwo) load(i int) float64 {
	r := &p.reps[i]
	return float64(r.inflight.Load()) + math.Float64frombits(r.queue.Load())
}
