package balance

import (
	"math"
	"sync/atomic"
	"time"
)

// minServiceNs floors the service time used by the queue penalty, so a replica whose
// latency is not known yet still pays for its outstanding requests.
const minServiceNs = float64(time.Microsecond)

// errorFactor multiplies the latency sample of a failed request, so a replica that
// fails fast does not look fast.
const errorFactor = 4

// adaptive ranks replicas by C3's score (Suresh et al., "C3: Cutting Tail Latency in
// Cloud Data Stores via Adaptive Replica Selection", NSDI 2015), with the network part
// of the latency queued too:
//
//	score = (R - T) * (1 + outstanding*clients) + q^3 * T,
//	q = 1 + outstanding*clients + reportedQueue
//
// R is the EWMA of the latency this router observed, T the replica's own service time
// (1/mu; the observed latency when the replica reports none) and the cube makes a
// replica with a queue lose quickly to one without, which is what cuts the tail.
//
// R - T is what the replica does not account for: the transfer of request and answer
// and the hops. C3 adds it once, as if links had no queue. But a slow link is a queue
// of its own (a request waits behind the transfers ahead of it, as in network-aware
// load distribution over heterogeneous servers, where each server's cost is its
// transfer time plus its service time, each growing with its backlog), so each
// outstanding request adds another R - T. On a fast link R - T is small and this
// changes little; on a slow one a second request in flight doubles its cost, so
// bursts spill onto the fast replicas' service queues instead of piling up on the
// slow link.
//
// Four additions. C3 learns that a replica turned slow only when its first slow answer
// arrives; meanwhile every pick may land there. So R is at least the age of the oldest
// request still outstanding on the replica: a replica that has not answered for longer
// than the others take is avoided within a few milliseconds of turning slow.
//
// And two make it recover. A replica that gets no traffic keeps its last (slow)
// EWMA forever under plain C3, so R and T decay with the time since the replica's last
// sample (halving every half-life): after a few half-lives it scores like the others and
// is probed once; the probe's outstanding request holds it off meanwhile. And the EWMA
// weight of a sample grows with that idle time, so the probe's answer replaces the stale
// estimate instead of nudging it: a replica that is still slow goes straight back to
// idle, one that is fast again gets its share back at once.
//
// And probes back off. Every probe of a replica that is still slow costs one request
// its full latency, and each shard's probes add up in the tail of a query that asks
// them all. So a probe that comes back still slow (more than twice the best other
// replica's latency, or failed) doubles that replica's half-life, up to maxBackoff
// times the base one; a probe that comes back fast restores it. A replica that stays
// slow is probed half as often, one that turns fast again is found at most maxBackoff
// times later.
type adaptive struct {
	base
	clients  float64
	alpha    float64
	halfLife float64 // ns
	next     atomic.Uint64
}

func (a *adaptive) Pick(exclude int) int {
	n := len(a.reps)
	if a.candidates(exclude) == 0 {
		return -1
	}
	now := int64(a.now())
	start := int(a.next.Add(1) % uint64(n))
	best, bestScore := -1, 0.0
	for k := range n {
		i := (start + k) % n
		if i == exclude {
			continue
		}
		if s := a.score(i, now); best < 0 || s < bestScore {
			best, bestScore = i, s
		}
	}
	return best
}

// Score returns replica i's current score (lower is better), for tests and metrics.
func (a *adaptive) Score(i int) float64 { return a.score(i, int64(a.now())) }

func (a *adaptive) score(i int, now int64) float64 {
	r := &a.reps[i]
	decay := math.Exp2(-float64(max(now-r.last.Load(), 0)) / a.replicaHalfLife(r))
	lat := math.Float64frombits(r.ewma.Load()) * decay
	for s := range r.starts {
		if st := r.starts[s].Load(); st != 0 {
			lat = max(lat, float64(now-(st-1)))
		}
	}
	svc := math.Float64frombits(r.service.Load())
	if svc <= 0 || svc > lat {
		svc = lat
	}
	svc = max(svc, minServiceNs)
	out := float64(r.inflight.Load()) * a.clients
	q := 1 + out + math.Float64frombits(r.queue.Load())
	return max(lat-svc, 0)*(1+out) + q*q*q*svc
}

// Start also keeps the start time in a free slot, for the outstanding-age term.
func (a *adaptive) Start(i int) Ticket {
	t := a.base.Start(i)
	if t.replica < 0 {
		return t
	}
	r := &a.reps[i]
	for s := range r.starts {
		if r.starts[s].CompareAndSwap(0, t.start+1) {
			t.slot = int32(s)
			break
		}
	}
	return t
}

func (a *adaptive) Done(t Ticket, err error) time.Duration {
	latency, now := a.finish(t)
	if !a.valid(int(t.replica)) {
		return 0
	}
	r := &a.reps[t.replica]
	x := float64(latency)
	last := r.last.Load()
	idle := float64(max(now-last, 0))
	w := max(a.alpha, 1-math.Exp2(-idle/a.halfLife))
	if float64(t.start-last) >= a.halfLife {
		a.probed(int(t.replica), x, err)
	}
	for {
		old := r.ewma.Load()
		prev := math.Float64frombits(old)
		sample := x
		if err != nil {
			sample = max(x, prev) * errorFactor
		}
		next := sample
		if prev > 0 {
			next = prev + w*(sample-prev)
		}
		if r.ewma.CompareAndSwap(old, math.Float64bits(next)) {
			break
		}
	}
	r.last.Store(now)
	return latency
}

// probed adjusts replica i's half-life after the answer to a probe, a request sent
// after at least a half-life without an answer from it: x is the probe's latency.
// A probe that fails or is still slower than twice the best of the other replicas'
// latency means the replica is still slow, so it is probed at most half as often:
// its half-life doubles, up to maxBackoff times the base one, which bounds how much
// later a replica that turned fast again is found. Any other answer restores the
// base half-life.
func (a *adaptive) probed(i int, x float64, err error) {
	best := math.Inf(1)
	for j := range a.reps {
		if e := math.Float64frombits(a.reps[j].ewma.Load()); j != i && e > 0 {
			best = min(best, e)
		}
	}
	if math.IsInf(best, 1) {
		return
	}
	r := &a.reps[i]
	if err != nil || x > 2*best {
		r.halfLife.Store(math.Float64bits(min(2*a.replicaHalfLife(r), maxBackoff*a.halfLife)))
	} else {
		r.halfLife.Store(0)
	}
}

// replicaHalfLife returns the half-life of replica r's decay, in ns.
func (a *adaptive) replicaHalfLife(r *replica) float64 {
	if hl := math.Float64frombits(r.halfLife.Load()); hl > 0 {
		return hl
	}
	return a.halfLife
}
