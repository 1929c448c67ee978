package balance

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"
)

func mustNew(t testing.TB, p Policy, n int, opts ...Option) Balancer {
	t.Helper()
	b, err := New(p, n, append([]Option{WithSeed(42)}, opts...)...)
	if err != nil {
		t.Fatalf("New(%s, %d): %v", p, n, err)
	}
	return b
}

// picks runs n pick/start/done rounds, each taking 1ms on clock (when not nil), and
// returns how often each replica was chosen.
func picks(b Balancer, clock *fakeClock, n, exclude int) []int {
	counts := make([]int, b.Len())
	for range n {
		i := b.Pick(exclude)
		if i < 0 {
			continue
		}
		counts[i]++
		tk := b.Start(i)
		if clock != nil {
			clock.t += time.Millisecond
		}
		b.Done(tk, nil)
	}
	return counts
}

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Policy
		wantErr bool
	}{
		{"RoundRobin", RoundRobin, false},
		{"adaptive", Adaptive, false},
		{"POWEROFTWOCHOICES", PowerOfTwoChoices, false},
		{"Random", "", true},
		{"", "", true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePolicy(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("ParsePolicy(%q) = %q, %v; want %q, err %v", tc.in, got, err, tc.want, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrUnknownPolicy) {
				t.Fatalf("error %v does not wrap ErrUnknownPolicy", err)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New("Fastest", 3); !errors.Is(err, ErrUnknownPolicy) {
		t.Fatalf("New(Fastest) error = %v, want ErrUnknownPolicy", err)
	}
	if _, err := New(RoundRobin, -1); err == nil {
		t.Fatal("New with -1 replicas succeeded")
	}
}

// TestEveryPolicyEdges checks what every policy must do the same way: nothing to pick
// from, the exclusion honoured, out-of-range indexes ignored, every replica reachable.
func TestEveryPolicyEdges(t *testing.T) {
	for _, p := range Policies {
		t.Run(string(p), func(t *testing.T) {
			if got := mustNew(t, p, 0).Pick(-1); got != -1 {
				t.Errorf("empty set: Pick = %d, want -1", got)
			}
			one := mustNew(t, p, 1)
			if got := one.Pick(0); got != -1 {
				t.Errorf("one replica excluded: Pick = %d, want -1", got)
			}
			if got := one.Pick(-1); got != 0 {
				t.Errorf("one replica: Pick = %d, want 0", got)
			}
			clock := &fakeClock{}
			b := mustNew(t, p, 3, WithClock(clock.now))
			if tk := b.Start(7); tk.Replica() != -1 {
				t.Errorf("Start(7) on 3 replicas = replica %d", tk.Replica())
			}
			b.Done(Ticket{replica: -2}, nil)
			b.Done(b.Start(7), nil)
			b.Report(9, Load{QueueDepth: 3})
			if b.Policy() != p || b.Len() != 3 {
				t.Errorf("Policy, Len = %s, %d", b.Policy(), b.Len())
			}
			for exclude := -1; exclude < 3; exclude++ {
				counts := picks(b, clock, 300, exclude)
				for i, c := range counts {
					if i == exclude && c != 0 {
						t.Errorf("exclude %d: picked %d times", exclude, c)
					}
					if i != exclude && c == 0 {
						t.Errorf("exclude %d: replica %d never picked: %v", exclude, i, counts)
					}
				}
			}
			for i := range 3 {
				if f := b.InFlight(i); f != 0 {
					t.Errorf("InFlight(%d) = %d after all done", i, f)
				}
			}
		})
	}
}

func TestRoundRobinOrder(t *testing.T) {
	for _, tc := range []struct {
		n, exclude int
		want       []int
	}{
		{3, -1, []int{0, 1, 2, 0, 1, 2}},
		{3, 1, []int{0, 2, 2, 0, 2, 2}},
		{2, 0, []int{1, 1, 1}},
	} {
		t.Run(fmt.Sprint(tc.n, "/", tc.exclude), func(t *testing.T) {
			b := mustNew(t, RoundRobin, tc.n)
			for k, want := range tc.want {
				if got := b.Pick(tc.exclude); got != want {
					t.Fatalf("pick %d = %d, want %d", k, got, want)
				}
			}
		})
	}
}

func TestSmoothSchedule(t *testing.T) {
	for _, tc := range []struct {
		weights []int
		want    []int32
	}{
		// nginx's documented example: {5, 1, 1} -> a a b a c a a.
		{[]int{5, 1, 1}, []int32{0, 0, 1, 0, 2, 0, 0}},
		{[]int{1, 1, 1}, []int32{0, 1, 2}},
		{[]int{2, 1}, []int32{0, 1, 0}},
		{[]int{0, 0}, []int32{0, 1}},
		{nil, []int32{0}},
	} {
		t.Run(fmt.Sprint(tc.weights), func(t *testing.T) {
			got := smoothSchedule(tc.weights)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("smoothSchedule(%v) = %v, want %v", tc.weights, got, tc.want)
			}
		})
	}
}

func TestWeightedFollowsCapacity(t *testing.T) {
	for _, tc := range []struct {
		name        string
		caps        []float64
		wantWeights []int
	}{
		{"equal", []float64{100, 100, 100}, []int{32, 32, 32}},
		{"unknown is default", []float64{0, 0, 0}, []int{1, 1, 1}},
		{"four to one", []float64{400, 100, 100}, []int{32, 8, 8}},
		{"tiny keeps a share", []float64{1000, 1, 500}, []int{32, 1, 16}},
		{"one unknown", []float64{200, 0, 100}, []int{32, 16, 16}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mustNew(t, WeightedRoundRobin, len(tc.caps))
			for i, c := range tc.caps {
				b.Report(i, Load{Capacity: c})
			}
			w := b.(*weighted).Weights()
			if fmt.Sprint(w) != fmt.Sprint(tc.wantWeights) {
				t.Fatalf("weights = %v, want %v", w, tc.wantWeights)
			}
			total := 0
			for _, x := range w {
				total += x
			}
			counts := picks(b, nil, total*10, -1)
			for i := range counts {
				if counts[i] != w[i]*10 {
					t.Fatalf("picks %v over %d rounds, want 10x weights %v", counts, total*10, w)
				}
			}
		})
	}
}

func TestLeastConnections(t *testing.T) {
	for _, tc := range []struct {
		name     string
		inflight []int
		exclude  int
		want     []int // acceptable answers
	}{
		{"fewest wins", []int{3, 1, 2}, -1, []int{1}},
		{"excluded fewest", []int{3, 1, 2}, 1, []int{2}},
		{"tie is shared", []int{2, 0, 0}, -1, []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mustNew(t, LeastConnections, len(tc.inflight))
			for i, n := range tc.inflight {
				for range n {
					b.Start(i)
				}
			}
			seen := map[int]int{}
			for range 20 {
				seen[b.Pick(tc.exclude)]++
			}
			for _, w := range tc.want {
				if seen[w] == 0 {
					t.Errorf("replica %d never picked: %v", w, seen)
				}
				delete(seen, w)
			}
			if len(seen) != 0 {
				t.Errorf("unexpected picks %v", seen)
			}
		})
	}
}

func TestPowerOfTwoChoices(t *testing.T) {
	for _, tc := range []struct {
		name    string
		load    []float64 // reported queue depth
		exclude int
		never   int
		min     []int // minimum share (of 1000) of each replica
	}{
		{"most loaded never wins", []float64{0, 0, 10}, -1, 2, []int{300, 300, 0}},
		{"two left and one excluded", []float64{5, 0, 0}, 1, 1, []int{0, 0, 1000}},
		{"uniform when equal", []float64{0, 0, 0, 0}, -1, -1, []int{150, 150, 150, 150}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mustNew(t, PowerOfTwoChoices, len(tc.load))
			for i, q := range tc.load {
				b.Report(i, Load{QueueDepth: q})
			}
			counts := make([]int, len(tc.load))
			for range 1000 {
				counts[b.Pick(tc.exclude)]++
			}
			if tc.never >= 0 && counts[tc.never] != 0 {
				t.Errorf("replica %d picked %d times: %v", tc.never, counts[tc.never], counts)
			}
			for i, m := range tc.min {
				if counts[i] < m {
					t.Errorf("replica %d picked %d times, want >= %d: %v", i, counts[i], m, counts)
				}
			}
		})
	}
}

func TestPowerOfTwoChoicesIsSeeded(t *testing.T) {
	run := func() []int {
		b := mustNew(t, PowerOfTwoChoices, 5)
		out := make([]int, 50)
		for k := range out {
			out[k] = b.Pick(-1)
			b.Start(out[k]) // uneven load so the comparison matters
		}
		return out
	}
	if a, b := fmt.Sprint(run()), fmt.Sprint(run()); a != b {
		t.Fatalf("same seed, different picks:\n%s\n%s", a, b)
	}
}

// fakeClock is a hand-moved clock for Adaptive.
type fakeClock struct{ t time.Duration }

func (c *fakeClock) now() time.Duration { return c.t }

// TestAdaptiveSlowReplicaRecovers simulates a router sending one request every 2ms to
// three replicas, each answering after its current latency. Replica 1 turns 10x slow
// for 20s, then fast again. Per phase it checks the share of traffic replica 1 gets.
func TestAdaptiveSlowReplicaRecovers(t *testing.T) {
	const fast, slow, gap = 2 * time.Millisecond, 20 * time.Millisecond, 2 * time.Millisecond
	type phase struct {
		name     string
		dur      time.Duration
		latency  [3]time.Duration
		measure  time.Duration // only the tail of the phase is measured
		min, max float64       // share bounds of replica 1
	}
	phases := []phase{
		{"healthy", 5 * time.Second, [3]time.Duration{fast, fast, fast}, 4 * time.Second, 0.2, 0.5},
		{"slow", 20 * time.Second, [3]time.Duration{fast, slow, fast}, 15 * time.Second, 0.0001, 0.02},
		{"recovered", 10 * time.Second, [3]time.Duration{fast, fast, fast}, 5 * time.Second, 0.2, 0.5},
	}
	clock := &fakeClock{}
	sim := &simRouter{b: mustNew(t, Adaptive, 3, WithClock(clock.now), WithDecay(time.Second)), clock: clock}
	for _, ph := range phases {
		t.Run(ph.name, func(t *testing.T) {
			end := clock.t + ph.dur
			var counts [3]int
			total := 0
			for clock.t < end {
				i := sim.step(ph.latency)
				if clock.t >= end-ph.measure {
					counts[i]++
					total++
				}
				clock.t += gap
			}
			share := float64(counts[1]) / float64(total)
			t.Logf("%s: picks %v, replica 1 share %.4f", ph.name, counts, share)
			if share < ph.min || share > ph.max {
				t.Errorf("replica 1 share %.4f outside [%g, %g]", share, ph.min, ph.max)
			}
		})
	}
}

// TestAdaptiveBacksOffSlowProbes runs the same simulated router against a replica that
// turns 10x slow for 30s, is fast again for 10s, then slow again. While it stays slow,
// the time between its probes must double once, after the first probe that comes back
// slow, and no more; the fast answers after its recovery must undo that, so that the
// next slow phase is probed at the first pace again.
func TestAdaptiveBacksOffSlowProbes(t *testing.T) {
	const fast, slow, gap = 2 * time.Millisecond, 20 * time.Millisecond, 2 * time.Millisecond
	clock := &fakeClock{}
	sim := &simRouter{b: mustNew(t, Adaptive, 3, WithClock(clock.now), WithDecay(time.Second)), clock: clock}
	// run simulates dur and returns the time from the start to the first probe of
	// replica 1, then between its probes: a probe is a pick after at least 500ms
	// without one.
	run := func(dur time.Duration, latency [3]time.Duration) []time.Duration {
		var gaps []time.Duration
		lastPick, lastProbe := clock.t, clock.t
		for end := clock.t + dur; clock.t < end; clock.t += gap {
			if i := sim.step(latency); i == 1 {
				if clock.t-lastPick >= 500*time.Millisecond {
					gaps = append(gaps, clock.t-lastProbe)
					lastProbe = clock.t
				}
				lastPick = clock.t
			}
		}
		return gaps
	}
	healthy := [3]time.Duration{fast, fast, fast}
	slowOne := [3]time.Duration{fast, slow, fast}
	run(5*time.Second, healthy)
	// Without back-off an idle replica 10x slower than the others is probed every
	// log2(10) half-lives, 3.3s; a probe that comes back slow doubles that, once.
	pace := time.Duration(math.Log2(float64(slow/fast)) * float64(time.Second))
	check := func(name string, gaps []time.Duration) {
		t.Logf("%s: time to the first probe, then between probes: %v", name, gaps)
		if len(gaps) < 3 {
			t.Fatalf("%s: %d probes", name, len(gaps))
		}
		for k, g := range gaps[1:] {
			if g < pace*18/10 || g > pace*22/10 {
				t.Errorf("%s: %v between probes %d and %d, want about %v", name, g, k, k+1, 2*pace)
			}
		}
	}
	first := run(30*time.Second, slowOne)
	check("slow", first)
	run(10*time.Second, healthy)
	again := run(15*time.Second, slowOne)
	check("slow again", again)
	if again[0] != first[0] {
		t.Errorf("slow again: first probe after %v, want %v as the first time", again[0], first[0])
	}
}

// TestAdaptiveProbeHalfLife checks which answers change a replica's half-life: only
// those to probes (requests sent after a half-life without an answer), doubling it
// up to maxBackoff times the base when the probe failed or took more than twice the
// best other replica's latency, restoring the base otherwise.
func TestAdaptiveProbeHalfLife(t *testing.T) {
	const hl = time.Second
	boom := errors.New("boom")
	for _, tc := range []struct {
		name   string
		probes []time.Duration // latencies of replica 0's answers, each after 2 half-lives idle
		errs   bool            // the probes fail
		busy   bool            // no idle time before the answers: not probes
		want   time.Duration
	}{
		{"slow probe backs off", []time.Duration{5 * time.Millisecond}, false, false, 2 * hl},
		{"backs off up to the cap", []time.Duration{5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}, false, false, maxBackoff * hl},
		{"failed probe backs off", []time.Duration{time.Millisecond}, true, false, 2 * hl},
		{"fast probe restores", []time.Duration{5 * time.Millisecond, 2 * time.Millisecond}, false, false, hl},
		{"slow answers that are not probes do not", []time.Duration{5 * time.Millisecond, 5 * time.Millisecond}, false, true, hl},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &fakeClock{t: time.Second}
			b := mustNew(t, Adaptive, 2, WithClock(c.now), WithDecay(hl))
			serve(b, c, 0, time.Millisecond, nil)
			serve(b, c, 1, time.Millisecond, nil) // the best other replica: 1ms
			for _, lat := range tc.probes {
				if !tc.busy {
					c.t += 2 * hl
				}
				var err error
				if tc.errs {
					err = boom
				}
				serve(b, c, 0, lat, err)
			}
			a := b.(*adaptive)
			if got := time.Duration(a.replicaHalfLife(&a.reps[0])); got != tc.want {
				t.Fatalf("half-life %v, want %v", got, tc.want)
			}
			if got := time.Duration(a.replicaHalfLife(&a.reps[1])); got != hl {
				t.Fatalf("other replica's half-life %v, want %v", got, hl)
			}
		})
	}
}

// simRouter is a router on a fake clock: each step completes the requests that are due,
// then picks a replica and starts a request there that will take latency[i].
type simRouter struct {
	b     Balancer
	clock *fakeClock
	open  []simRequest
}

type simRequest struct {
	tk  Ticket
	end time.Duration
}

// step runs one pick at the clock's time and returns the replica picked.
func (r *simRouter) step(latency [3]time.Duration) int {
	kept := r.open[:0]
	for _, p := range r.open {
		if p.end <= r.clock.t {
			r.b.Done(p.tk, nil)
		} else {
			kept = append(kept, p)
		}
	}
	r.open = kept
	i := r.b.Pick(-1)
	r.open = append(r.open, simRequest{r.b.Start(i), r.clock.t + latency[i]})
	return i
}

// serve runs one request on replica i that takes lat on the fake clock.
func serve(b Balancer, c *fakeClock, i int, lat time.Duration, err error) {
	tk := b.Start(i)
	c.t += lat
	b.Done(tk, err)
}

func TestAdaptiveScore(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(b Balancer, c *fakeClock)
		better int // replica with the lower score
		worse  int
	}{
		{"lower latency wins", func(b Balancer, c *fakeClock) {
			serve(b, c, 0, 10*time.Millisecond, nil)
			serve(b, c, 1, 2*time.Millisecond, nil)
		}, 1, 0},
		{"outstanding requests cost cubically", func(b Balancer, c *fakeClock) {
			serve(b, c, 0, 2*time.Millisecond, nil)
			serve(b, c, 1, 5*time.Millisecond, nil)
			b.Start(0) // 2ms * 2^3 = 16ms > 5ms
		}, 1, 0},
		{"reported queue counts", func(b Balancer, c *fakeClock) {
			serve(b, c, 0, 2*time.Millisecond, nil)
			serve(b, c, 1, 3*time.Millisecond, nil)
			b.Report(0, Load{QueueDepth: 2, ServiceTime: time.Millisecond})
		}, 1, 0},
		{"errors look slow", func(b Balancer, c *fakeClock) {
			serve(b, c, 0, time.Millisecond, nil)
			serve(b, c, 1, time.Millisecond, nil)
			serve(b, c, 0, time.Millisecond, errors.New("boom"))
		}, 1, 0},
		{"idle slow replica decays", func(b Balancer, c *fakeClock) {
			serve(b, c, 0, 8*time.Millisecond, nil)
			c.t += 4 * time.Second // 8ms halves four times: 0.5ms
			serve(b, c, 1, 2*time.Millisecond, nil)
		}, 0, 1},
		{"an old outstanding request counts as latency", func(b Balancer, c *fakeClock) {
			// A small service time keeps the cubic term weak: only the age can tip it.
			b.Report(0, Load{ServiceTime: 100 * time.Microsecond})
			b.Report(1, Load{ServiceTime: 100 * time.Microsecond})
			serve(b, c, 0, 2*time.Millisecond, nil)
			serve(b, c, 1, 5*time.Millisecond, nil)
			b.Start(0)
			c.t += 20 * time.Millisecond // no answer yet: replica 0 turned slow
		}, 1, 0},
		{"a slow link queues its transfers", func(b Balancer, c *fakeClock) {
			// Both serve in 0.1ms. Replica 0 sits behind a slow link (6ms observed) with a
			// transfer in flight; replica 1 answers in 1ms but has 3 in flight. Plain C3
			// scores them 6.7ms and 7.3ms and queues a second transfer on the link.
			b.Report(0, Load{ServiceTime: 100 * time.Microsecond})
			b.Report(1, Load{ServiceTime: 100 * time.Microsecond})
			serve(b, c, 0, 6*time.Millisecond, nil)
			serve(b, c, 1, time.Millisecond, nil)
			b.Start(0)
			b.Start(1)
			b.Start(1)
			b.Start(1)
		}, 1, 0},
		{"a young outstanding request does not", func(b Balancer, c *fakeClock) {
			b.Report(0, Load{ServiceTime: 100 * time.Microsecond})
			b.Report(1, Load{ServiceTime: 100 * time.Microsecond})
			serve(b, c, 0, 2*time.Millisecond, nil)
			serve(b, c, 1, 5*time.Millisecond, nil)
			b.Start(0)
			c.t += time.Millisecond
		}, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &fakeClock{t: time.Second}
			b := mustNew(t, Adaptive, 2, WithClock(c.now), WithDecay(time.Second))
			tc.setup(b, c)
			a := b.(*adaptive)
			if sb, sw := a.Score(tc.better), a.Score(tc.worse); !(sb < sw) {
				t.Fatalf("score(%d) = %g, score(%d) = %g; want the first lower", tc.better, sb, tc.worse, sw)
			}
			if got := b.Pick(-1); got != tc.better {
				t.Fatalf("Pick = %d, want %d", got, tc.better)
			}
		})
	}
}

func TestTicketsMeasureLatency(t *testing.T) {
	for _, p := range Policies {
		t.Run(string(p), func(t *testing.T) {
			c := &fakeClock{t: time.Second}
			b := mustNew(t, p, 2, WithClock(c.now))
			tk := b.Start(1)
			if tk.Replica() != 1 || b.InFlight(1) != 1 {
				t.Fatalf("ticket %+v, in flight %d", tk, b.InFlight(1))
			}
			c.t += 7 * time.Millisecond
			if got := b.Done(tk, nil); got != 7*time.Millisecond {
				t.Fatalf("Done measured %v, want 7ms", got)
			}
			if b.InFlight(1) != 0 {
				t.Fatalf("in flight %d after Done", b.InFlight(1))
			}
		})
	}
	// More outstanding requests than age slots: all are counted and all end cleanly.
	c := &fakeClock{}
	b := mustNew(t, Adaptive, 1, WithClock(c.now))
	var tks []Ticket
	for range 3 * ageSlots {
		tks = append(tks, b.Start(0))
	}
	for _, tk := range tks {
		b.Done(tk, nil)
	}
	a := b.(*adaptive)
	for s := range a.reps[0].starts {
		if a.reps[0].starts[s].Load() != 0 {
			t.Fatalf("age slot %d still taken", s)
		}
	}
	if b.InFlight(0) != 0 {
		t.Fatalf("in flight %d", b.InFlight(0))
	}
}

// TestConcurrentUse hammers every policy from several goroutines; run with -race. The
// in-flight counters must all come back to zero.
func TestConcurrentUse(t *testing.T) {
	for _, p := range Policies {
		t.Run(string(p), func(t *testing.T) {
			b := mustNew(t, p, 4)
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Go(func() {
					for k := range 2000 {
						i := b.Pick(k % 5)
						if i < 0 || i >= 4 || i == k%5 {
							t.Errorf("Pick(%d) = %d", k%5, i)
							return
						}
						tk := b.Start(i)
						if k%100 == 0 {
							b.Report(g, Load{QueueDepth: float64(k % 7), Capacity: float64(1 + k%3)})
						}
						b.Done(tk, nil)
					}
				})
			}
			wg.Wait()
			for i := range 4 {
				if f := b.InFlight(i); f != 0 {
					t.Errorf("InFlight(%d) = %d", i, f)
				}
			}
		})
	}
}

func TestHotPathAllocatesNothing(t *testing.T) {
	for _, p := range Policies {
		t.Run(string(p), func(t *testing.T) {
			b := mustNew(t, p, 5)
			b.Report(0, Load{Capacity: 3})
			allocs := testing.AllocsPerRun(1000, func() {
				b.Done(b.Start(b.Pick(2)), nil)
			})
			if allocs != 0 {
				t.Fatalf("Pick+Start+Done allocates %v times per run", allocs)
			}
		})
	}
}

func BenchmarkPick(b *testing.B) {
	for _, p := range Policies {
		b.Run(string(p), func(b *testing.B) {
			bal := mustNew(b, p, 3)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					bal.Done(bal.Start(bal.Pick(-1)), nil)
				}
			})
		})
	}
}
