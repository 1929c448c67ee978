package router

import (
	"context"
	"errors"
	"time"

	"github.com/annshard/annshard/shardserver/client"
)

type attempt[T any] struct {
	i   int
	val T
	err error
}

// readShard runs one read on a replica of shard s chosen by the balancer. A replica
// that fails (not the caller's fault) or times out is retried once on another replica;
// with hedge set and a known latency percentile, a second replica is asked once the
// first is slower than that percentile. The first success wins and the other attempt
// is cancelled. At most two replicas are asked in all.
func readShard[T any](ctx context.Context, r *Router, s *shardSet, hedge bool, op string,
	call func(ctx context.Context, rep *replica) (T, error)) (T, error) {
	var zero T
	if s == nil || len(s.replicas) == 0 {
		return zero, apiErr(client.CodeUnavailable, "no ready replica")
	}
	results := make(chan attempt[T], 2)
	var cancels [2]context.CancelFunc
	defer func() {
		for _, c := range cancels {
			if c != nil {
				c()
			}
		}
	}()
	launched := 0
	launch := func(i int, budget time.Duration) {
		var actx context.Context
		var cancel context.CancelFunc
		if budget > 0 {
			actx, cancel = context.WithTimeout(ctx, budget)
		} else {
			actx, cancel = context.WithCancel(ctx)
		}
		cancels[launched] = cancel
		launched++
		rep := s.replicas[i]
		tk := s.bal.Start(i)
		rep.obs.selections.Inc()
		go func() {
			start := time.Now()
			val, err := call(actx, rep)
			lat := time.Since(start)
			fault := err
			switch {
			case err == nil:
				s.lat.record(lat)
				rep.obs.latency.Observe(lat.Seconds())
			case callerFault(err):
				fault = nil
			case ctx.Err() == nil && errors.Is(actx.Err(), context.Canceled):
				// We cancelled it: the other attempt won. Not the replica's fault,
				// but it was at least this slow.
				fault = nil
			}
			s.bal.Done(tk, fault)
			results <- attempt[T]{i, val, err}
		}()
	}

	first := s.pick(-1)
	if first < 0 {
		return zero, apiErr(client.CodeUnavailable, "no ready replica")
	}
	// With another replica to fall back on, the first attempt gets half the time left, so
	// a timeout still leaves room for the retry.
	var budget time.Duration
	if dl, ok := ctx.Deadline(); ok && len(s.replicas) > 1 {
		budget = time.Until(dl) / 2
	}
	launch(first, budget)
	pending := 1

	var hedgeC <-chan time.Time
	if hedge && len(s.replicas) > 1 {
		if d := s.lat.hedgeAfter(); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			hedgeC = t.C
		}
	}
	var lastErr error
	for pending > 0 {
		select {
		case res := <-results:
			pending--
			if res.err == nil {
				return res.val, nil
			}
			if callerFault(res.err) {
				return zero, res.err
			}
			lastErr = res.err
			if launched < 2 && ctx.Err() == nil {
				if j := s.pick(res.i); j >= 0 && j != res.i {
					r.m.retries.WithLabelValues(op).Inc()
					launch(j, 0)
					pending++
				}
			}
		case <-hedgeC:
			hedgeC = nil
			if launched < 2 {
				if j := s.pick(first); j >= 0 && j != first {
					r.m.hedges.Inc()
					launch(j, 0)
					pending++
				}
			}
		case <-ctx.Done():
			return zero, apiErr(client.CodeUnavailable, "no answer within the deadline: %v", ctx.Err())
		}
	}
	return zero, lastErr
}
