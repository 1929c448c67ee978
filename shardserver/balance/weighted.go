package balance

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
)

// weightScale is the resolution of weights: capacities are scaled so the largest is
// weightScale. It bounds the schedule at weightScale*n entries and keeps a replica
// reporting 1% of the best capacity at weight 1 rather than starved.
const weightScale = 32

// weighted is smooth weighted round-robin as in nginx: each replica gets a share of
// picks proportional to its weight, and picks of the heavy replica are spread out
// (5,1,1 gives a a b a c a a, not a a a a a b c). Weights come from the capacity the
// replicas report. Rather than run nginx's per-pick update of every current weight under
// a lock, it precomputes one period of the smooth sequence whenever the weights change
// and Pick walks it with an atomic counter: the same sequence, lock-free.
type weighted struct {
	base
	next  atomic.Uint64
	sched atomic.Pointer[[]int32]

	mu      sync.Mutex // serializes Report's rebuilds
	weights []int
	caps    []float64
}

func (w *weighted) initWeights() {
	w.weights = make([]int, len(w.reps))
	w.caps = make([]float64, len(w.reps))
	for i := range w.weights {
		w.weights[i] = 1
	}
	s := smoothSchedule(w.weights)
	w.sched.Store(&s)
}

func (w *weighted) Pick(exclude int) int {
	if w.candidates(exclude) == 0 {
		return -1
	}
	s := *w.sched.Load()
	k := int(w.next.Add(1)-1) % len(s)
	for range len(s) {
		if i := int(s[k]); i != exclude {
			return i
		}
		k = (k + 1) % len(s)
	}
	// Every entry is the excluded replica: the others have weight 0, which
	// smoothSchedule never produces, but fall back to any other replica.
	return (exclude + 1) % len(w.reps)
}

func (w *weighted) Report(i int, l Load) {
	if !w.valid(i) {
		return
	}
	w.base.Report(i, l)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.caps[i] = max(l.Capacity, 0)
	top := slices.Max(w.caps)
	next := make([]int, len(w.caps))
	for j, c := range w.caps {
		next[j] = 1
		if top > 0 && c > 0 {
			next[j] = max(1, int(math.Round(c/top*weightScale)))
		} else if top > 0 {
			// Unknown capacity next to known ones: assume an average replica.
			next[j] = weightScale / 2
		}
	}
	if slices.Equal(next, w.weights) {
		return
	}
	w.weights = next
	s := smoothSchedule(next)
	w.sched.Store(&s)
}

// Weights returns the current integer weights, for tests and metrics.
func (w *weighted) Weights() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.weights)
}

// smoothSchedule returns one period (sum of weights picks) of nginx's smooth weighted
// round-robin: every pick adds each weight to its current value, takes the largest
// current value, and subtracts the total from it. Weights below 1 count as 1.
func smoothSchedule(weights []int) []int32 {
	total := 0
	for _, w := range weights {
		total += max(w, 1)
	}
	cur := make([]int, len(weights))
	out := make([]int32, 0, total)
	for range total {
		best := 0
		for j, w := range weights {
			cur[j] += max(w, 1)
			if cur[j] > cur[best] {
				best = j
			}
		}
		cur[best] -= total
		out = append(out, int32(best))
	}
	if len(out) == 0 {
		out = append(out, 0)
	}
	return out
}
