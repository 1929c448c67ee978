package balance

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"sync/atomic"
	"time"
)

// Policy names a replica-selection policy. The names are the ones of the AnnIndex API
// (spec.router.loadBalancing) and of the router's --policy flag.
type Policy string

// The policies, in the order of Policies.
const (
	RoundRobin         Policy = "RoundRobin"
	WeightedRoundRobin Policy = "WeightedRoundRobin"
	LeastConnections   Policy = "LeastConnections"
	PowerOfTwoChoices  Policy = "PowerOfTwoChoices"
	Adaptive           Policy = "Adaptive"
)

// Policies lists every policy, for flags, help text and tests.
var Policies = []Policy{RoundRobin, WeightedRoundRobin, LeastConnections, PowerOfTwoChoices, Adaptive}

// ErrUnknownPolicy is returned by ParsePolicy and New for a name that is not a Policy.
var ErrUnknownPolicy = errors.New("unknown load-balancing policy")

// ParsePolicy returns the policy called name, ignoring case so that flags are forgiving.
func ParsePolicy(name string) (Policy, error) {
	for _, p := range Policies {
		if strings.EqualFold(string(p), name) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w %q (want one of %v)", ErrUnknownPolicy, name, Policies)
}

// Load is what a replica reports about itself (GET /v1/load). Zero fields are unknown.
type Load struct {
	// QueueDepth is the number of requests waiting or running inside the replica,
	// counting those of every router. Adaptive and PowerOfTwoChoices use it.
	QueueDepth float64
	// ServiceTime is the replica's own time to serve one request (its p50), without the
	// network. Adaptive uses it as C3's 1/mu; when zero it uses the observed latency.
	ServiceTime time.Duration
	// Capacity is the relative throughput the replica can sustain (any unit, only ratios
	// matter). WeightedRoundRobin uses it as the weight; zero means the default weight.
	Capacity float64
}

// Balancer picks replicas of one replica set, numbered 0..Len()-1.
type Balancer interface {
	// Pick returns the replica to use, never exclude (pass -1 to exclude none), or -1
	// when no replica is left.
	Pick(exclude int) int
	// Start records that a request to replica i is being sent; hand the ticket to Done.
	Start(i int) Ticket
	// Done records that the request of t ended; err non-nil means the replica failed it
	// (not the caller's own bad request). It returns the latency the balancer measured.
	Done(t Ticket, err error) time.Duration
	// Report records the replica's own load report.
	Report(i int, l Load)
	// InFlight returns the number of requests started and not done on replica i.
	InFlight(i int) int
	// Len returns the size of the replica set.
	Len() int
	// Policy returns the policy this Balancer implements.
	Policy() Policy
}

// Ticket is one started request: which replica, when, and (Adaptive) where its start
// time is kept. It is a small value: passing it around allocates nothing.
type Ticket struct {
	replica int32
	slot    int32 // index in replica.starts, or -1
	start   int64 // balancer clock, ns
}

// Replica returns the replica the ticket was started on.
func (t Ticket) Replica() int { return int(t.replica) }

// Option adjusts a Balancer built by New.
type Option func(*config)

type config struct {
	seed     uint64
	seeded   bool
	now      func() time.Duration
	clients  float64
	halfLife time.Duration
	alpha    float64
}

// WithSeed fixes the seed of the random choices (PowerOfTwoChoices), for tests and
// benchmarks that must repeat; by default the seed comes from the clock.
func WithSeed(seed uint64) Option { return func(c *config) { c.seed, c.seeded = seed, true } }

// WithClock replaces the monotonic clock (time since an arbitrary origin) used by
// Adaptive for its decay, so tests can move time by hand.
func WithClock(now func() time.Duration) Option { return func(c *config) { c.now = now } }

// WithClients tells Adaptive how many routers share the replicas (C3's concurrency
// compensation: each of our outstanding requests stands for that many); default 1.
func WithClients(n int) Option {
	return func(c *config) { c.clients = float64(max(n, 1)) }
}

// WithDecay sets Adaptive's half-life: an idle replica's score halves every halfLife,
// so a replica that was slow is probed again after a few half-lives. Default 1s; shorter
// recovers faster but sends more probes to a replica that is still slow.
func WithDecay(halfLife time.Duration) Option {
	return func(c *config) {
		if halfLife > 0 {
			c.halfLife = halfLife
		}
	}
}

// New returns a Balancer of policy over n replicas.
func New(policy Policy, n int, opts ...Option) (Balancer, error) {
	if n < 0 {
		return nil, fmt.Errorf("new balancer: negative replica count %d", n)
	}
	start := time.Now()
	c := config{
		now:      func() time.Duration { return time.Since(start) },
		clients:  1,
		halfLife: time.Second,
		alpha:    0.3,
	}
	for _, o := range opts {
		o(&c)
	}
	if !c.seeded {
		c.seed = uint64(start.UnixNano())
	}
	switch policy {
	case RoundRobin:
		r := &roundRobin{}
		r.init(policy, n, c)
		return r, nil
	case WeightedRoundRobin:
		w := &weighted{}
		w.init(policy, n, c)
		w.initWeights()
		return w, nil
	case LeastConnections:
		l := &leastConn{}
		l.init(policy, n, c)
		return l, nil
	case PowerOfTwoChoices:
		p := &powerOfTwo{}
		p.init(policy, n, c)
		return p, nil
	case Adaptive:
		a := &adaptive{clients: c.clients, alpha: c.alpha, halfLife: float64(c.halfLife)}
		a.init(policy, n, c)
		return a, nil
	}
	return nil, fmt.Errorf("new balancer: %w %q", ErrUnknownPolicy, policy)
}

// maxBackoff caps how far Adaptive stretches the half-life of a replica whose probes
// keep coming back slow: twice the base half-life, so a replica 10x slower than the
// others is probed every 6.6s instead of 3.3s at the default 1s.
const maxBackoff = 2

// ageSlots is how many outstanding requests per replica Adaptive tracks the start of;
// more in flight are still counted, only their age is not watched.
const ageSlots = 8

// replica is the per-replica state, two cache lines so that counters of neighbouring
// replicas updated by different cores do not share a line.
type replica struct {
	inflight atomic.Int64
	ewma     atomic.Uint64          // float64 bits: EWMA of observed latency, ns
	last     atomic.Int64           // clock (ns) of the last sample, for decay
	queue    atomic.Uint64          // float64 bits: reported queue depth
	service  atomic.Uint64          // float64 bits: reported service time, ns
	starts   [ageSlots]atomic.Int64 // start+1 of outstanding requests (0 = free), Adaptive only
	halfLife atomic.Uint64          // float64 bits: Adaptive's decay half-life of this replica, ns (0 = the base one)
	_        [16]byte
}

// base holds what every policy shares: the replicas, the policy name and a lock-free
// random source.
type base struct {
	reps   []replica
	policy Policy
	rng    rng
	now    func() time.Duration
}

func (b *base) init(policy Policy, n int, c config) {
	b.reps = make([]replica, n)
	b.policy = policy
	b.rng.s.Store(c.seed)
	b.now = c.now
}

func (b *base) Len() int       { return len(b.reps) }
func (b *base) Policy() Policy { return b.policy }

func (b *base) valid(i int) bool { return i >= 0 && i < len(b.reps) }

func (b *base) Start(i int) Ticket {
	if !b.valid(i) {
		return Ticket{replica: -1, slot: -1}
	}
	b.reps[i].inflight.Add(1)
	return Ticket{replica: int32(i), slot: -1, start: int64(b.now())}
}

func (b *base) Done(t Ticket, _ error) time.Duration {
	lat, _ := b.finish(t)
	return lat
}

// finish ends the ticket's request and returns its latency and the current clock.
func (b *base) finish(t Ticket) (time.Duration, int64) {
	i := int(t.replica)
	if !b.valid(i) {
		return 0, 0
	}
	r := &b.reps[i]
	if t.slot >= 0 && int(t.slot) < len(r.starts) {
		r.starts[t.slot].CompareAndSwap(t.start+1, 0)
	}
	r.inflight.Add(-1)
	now := int64(b.now())
	return time.Duration(max(now-t.start, 0)), now
}

func (b *base) InFlight(i int) int {
	if !b.valid(i) {
		return 0
	}
	return int(b.reps[i].inflight.Load())
}

func (b *base) Report(i int, l Load) {
	if !b.valid(i) {
		return
	}
	b.reps[i].queue.Store(math.Float64bits(max(l.QueueDepth, 0)))
	b.reps[i].service.Store(math.Float64bits(float64(max(l.ServiceTime, 0))))
}

// candidates returns how many replicas may be picked given exclude.
func (b *base) candidates(exclude int) int {
	if b.valid(exclude) {
		return len(b.reps) - 1
	}
	return len(b.reps)
}

// rng is splitmix64 over an atomic counter: lock-free, allocation-free, seedable, and
// good enough to pick among a handful of replicas.
type rng struct{ s atomic.Uint64 }

func (r *rng) next() uint64 {
	z := r.s.Add(0x9e3779b97f4a7c15)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn returns a number in [0, n), n > 0, without modulo bias worth caring about for
// tiny n (Lemire's multiply-shift).
func (r *rng) intn(n int) int {
	hi, _ := bits.Mul64(r.next(), uint64(n))
	return int(hi)
}
