package router

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/balance"
	"github.com/annshard/annshard/shardserver/client"
)

// TestReadShardAttempts drives readShard with a call that answers per replica, over a
// shard of 2 replicas whose hedging threshold is 1ms: at most two replicas are asked,
// a hedge's answer is taken when the first attempt loses or fails, and a winning hedge
// cancels the first attempt.
func TestReadShardAttempts(t *testing.T) {
	unavailable := &client.APIError{Code: client.CodeUnavailable, Message: "down"}
	for _, tc := range []struct {
		name string
		kind readKind
		// behave answers for the n-th attempt (0: the first) under ctx.
		behave    func(ctx context.Context, n int) (string, error)
		want      string
		wantErr   bool
		wantCalls int32
		cancelled bool // the first attempt must see its context cancelled
	}{
		{"first answers", readGet, func(ctx context.Context, n int) (string, error) { return "a", nil }, "a", false, 1, false},
		{"first fails: retried on the other", readGet, func(ctx context.Context, n int) (string, error) {
			if n == 0 {
				return "", unavailable
			}
			return "retry", nil
		}, "retry", false, 2, false},
		{"hedge wins and cancels the first", readSearch, func(ctx context.Context, n int) (string, error) {
			if n == 0 {
				<-ctx.Done()
				return "", ctx.Err()
			}
			return "hedge", nil
		}, "hedge", false, 2, true},
		{"first fails after the hedge started: the hedge's answer", readSearch, func(ctx context.Context, n int) (string, error) {
			if n == 0 {
				time.Sleep(50 * time.Millisecond)
				return "", unavailable
			}
			time.Sleep(100 * time.Millisecond)
			return "hedge", nil
		}, "hedge", false, 2, false},
		{"both fail: two calls, an error", readSearch, func(ctx context.Context, n int) (string, error) {
			time.Sleep(20 * time.Millisecond)
			return "", unavailable
		}, "", true, 2, false},
		{"caller fault is not retried", readGet, func(ctx context.Context, n int) (string, error) {
			return "", &client.APIError{Code: client.CodeInvalidArgument, Message: "bad"}
		}, "", true, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := newCluster(t, 1, 2, Config{Policy: balance.RoundRobin, HedgePercentile: 50, Timeout: 5 * time.Second})
			s := cl.r.view.Load().shard(0)
			for range minSamples {
				s.lat.record(time.Millisecond)
			}
			var calls atomic.Int32
			var firstCancelled atomic.Bool
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := readShard(ctx, cl.r, s, tc.kind, "test", func(ctx context.Context, rep *replica) (string, error) {
				n := int(calls.Add(1)) - 1
				v, err := tc.behave(ctx, n)
				if n == 0 && errors.Is(ctx.Err(), context.Canceled) {
					firstCancelled.Store(true)
				}
				return v, err
			})
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %q, %v; want %q (error: %v)", got, err, tc.want, tc.wantErr)
			}
			// A hedge still running when readShard returns is cancelled; give it a moment
			// to be counted, then the count must hold still.
			time.Sleep(150 * time.Millisecond)
			if n := calls.Load(); n != tc.wantCalls {
				t.Fatalf("%d calls, want %d", n, tc.wantCalls)
			}
			if firstCancelled.Load() != tc.cancelled {
				t.Fatalf("first attempt cancelled: %v, want %v", firstCancelled.Load(), tc.cancelled)
			}
		})
	}
}

// TestPickSearchJoinsAFormingBatch: a search the balancer sends to a replica where it
// would lead a new batch and wait joins a batch forming on another replica instead; the
// balancer's choice stands when that replica would send at once, when nothing forms
// elsewhere, for the excluded replica, for a replica that is down and for one that
// answers much slower or was never timed.
func TestPickSearchJoinsAFormingBatch(t *testing.T) {
	cl := newCluster(t, 1, 2, Config{Policy: balance.RoundRobin, BatchMax: 8, BatchWait: time.Millisecond})
	s := cl.r.view.Load().shard(0)
	a, b := s.replicas[0].batch, s.replicas[1].batch
	picks := func(exclude int) map[int]int {
		got := map[int]int{}
		for range 8 { // round robin: both replicas come up
			got[s.pickSearch(exclude)]++
		}
		return got
	}
	// Nothing outstanding anywhere: the balancer's choice (both replicas in turn).
	if got := picks(-1); got[0] == 0 || got[1] == 0 {
		t.Fatalf("idle replicas: picks %v, want both", got)
	}
	// Replica 1 busy (a search there would wait for company), a batch forming on 0,
	// which answers as fast: every search goes to 0.
	b.outstanding.Store(1)
	a.forming.Store(true)
	a.observe(time.Millisecond)
	b.observe(time.Millisecond)
	if got := picks(-1); got[0] != 8 {
		t.Fatalf("batch forming on 0, 1 busy: picks %v, want all on 0", got)
	}
	// Unless 0 answers much slower than 1 (a slow link the balancer only probes).
	a.rtt.Store(0)
	a.observe(2 * time.Millisecond)
	if got := picks(-1); got[0] == 0 || got[1] == 0 {
		t.Fatalf("batch forming on slow 0: picks %v, want the balancer's choice", got)
	}
	a.rtt.Store(0)
	if got := picks(-1); got[0] == 0 || got[1] == 0 {
		t.Fatalf("batch forming on 0 of unknown speed: picks %v, want the balancer's choice", got)
	}
	a.observe(time.Millisecond)
	// Excluding 0 (a retry or hedge after it): 1 it is.
	if got := picks(0); got[1] != 8 {
		t.Fatalf("excluding 0: picks %v, want all on 1", got)
	}
	// Replica 0 down: not joined.
	s.replicas[0].down.Store(true)
	if got := picks(-1); got[1] == 0 {
		t.Fatalf("0 down: picks %v, want 1 chosen", got)
	}
	s.replicas[0].down.Store(false)
	// Nothing forming on 0: the balancer's choice again.
	a.forming.Store(false)
	if got := picks(-1); got[0] == 0 || got[1] == 0 {
		t.Fatalf("nothing forming: picks %v, want both", got)
	}
	// Replica 1 idle (a search there goes at once): the balancer's choice even with a
	// batch forming on 0.
	b.outstanding.Store(0)
	a.forming.Store(true)
	if got := picks(-1); got[0] == 0 || got[1] == 0 {
		t.Fatalf("1 idle: picks %v, want both", got)
	}
}
