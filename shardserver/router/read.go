package router

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/annshard/annshard/shardserver/client"
)

type attempt[T any] struct {
	val T
	err error
}

// readKind says how readShard treats a read.
type readKind int

const (
	// readGet: a read of one vector, never hedged.
	readGet readKind = iota
	// readSearch: a search, through the replicas' micro-batchers (shardSet.pickSearch),
	// hedged once the latency percentile is known.
	readSearch
)

// readShard runs one read on a replica of shard s chosen by the balancer. A replica
// that fails (not the caller's fault) or times out is retried once on another replica;
// a search, once a latency percentile is known, asks a second replica when the first is
// slower than that percentile. The first success wins and the other attempt is
// cancelled. At most two replicas are asked in all.
//
// The first attempt, and a retry, run on the caller's goroutine: a read that needs no
// hedge (nearly all of them) starts no goroutine, whose stack would grow again through
// the HTTP client on every request. Only a hedge runs on its own, from a timer.
func readShard[T any](ctx context.Context, r *Router, s *shardSet, kind readKind, op string,
	call func(ctx context.Context, rep *replica) (T, error)) (T, error) {
	var zero T
	if s == nil || len(s.replicas) == 0 {
		return zero, apiErr(client.CodeUnavailable, "no ready replica")
	}
	pick := s.pick
	if kind == readSearch {
		pick = s.pickSearch
	}
	first := pick(-1)
	if first < 0 {
		return zero, apiErr(client.CodeUnavailable, "no ready replica")
	}
	// With another replica to fall back on, the first attempt gets half the time left, so
	// a timeout still leaves room for the retry.
	var actx context.Context
	var cancel context.CancelFunc
	if dl, ok := ctx.Deadline(); ok && len(s.replicas) > 1 {
		actx, cancel = context.WithTimeout(ctx, time.Until(dl)/2)
	} else {
		actx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	var h *hedger[T]
	if kind == readSearch && len(s.replicas) > 1 {
		if d := s.lat.hedgeAfter(); d > 0 {
			h = startHedge(ctx, r, s, pick, first, d, cancel, call)
			defer h.stop()
		}
	}

	val, err := tryReplica(ctx, actx, s, first, call)
	switch {
	case err == nil:
		return val, nil
	case callerFault(err):
		return zero, err
	}
	if h != nil && h.launched() {
		// The hedge is the second attempt: its answer decides.
		select {
		case res := <-h.result:
			return res.val, res.err
		case <-ctx.Done():
			return zero, deadlineErr(ctx)
		}
	}
	if ctx.Err() != nil {
		return zero, deadlineErr(ctx)
	}
	j := pick(first)
	if j < 0 || j == first {
		return zero, err
	}
	r.m.retries.WithLabelValues(op).Inc()
	if val, err = tryReplica(ctx, ctx, s, j, call); err != nil && !callerFault(err) && ctx.Err() != nil {
		return zero, deadlineErr(ctx)
	}
	return val, err
}

func deadlineErr(ctx context.Context) error {
	return apiErr(client.CodeUnavailable, "no answer within the deadline: %v", ctx.Err())
}

// tryReplica asks replica i of s under actx (ctx or a context derived from it) and
// tells the balancer how it went.
func tryReplica[T any](ctx, actx context.Context, s *shardSet, i int, call func(ctx context.Context, rep *replica) (T, error)) (T, error) {
	rep := s.replicas[i]
	tk := s.bal.Start(i)
	rep.obs.selections.Inc()
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
		// We cancelled it: the other attempt won. Not the replica's fault, but it was at
		// least this slow.
		fault = nil
	}
	s.bal.Done(tk, fault)
	return val, err
}

// hedger asks a second replica from a timer while the first attempt runs on the
// caller's goroutine. A winning hedge cancels the first attempt, so the caller returns
// from it and takes the hedge's answer.
type hedger[T any] struct {
	timer  *time.Timer
	result chan attempt[T] // the hedge's answer, once launched
	cancel context.CancelFunc

	mu         sync.Mutex
	closed     bool // no hedge may start any more
	isLaunched bool
}

func startHedge[T any](ctx context.Context, r *Router, s *shardSet, pick func(exclude int) int, first int, after time.Duration,
	cancelFirst context.CancelFunc, call func(ctx context.Context, rep *replica) (T, error)) *hedger[T] {
	h := &hedger[T]{result: make(chan attempt[T], 1)}
	hctx, cancel := context.WithCancel(ctx)
	h.cancel = cancel
	h.timer = time.AfterFunc(after, func() {
		h.mu.Lock()
		j := -1
		if !h.closed {
			j = pick(first)
		}
		if j < 0 || j == first {
			h.mu.Unlock()
			return
		}
		h.isLaunched = true
		h.mu.Unlock()
		r.m.hedges.Inc()
		val, err := tryReplica(ctx, hctx, s, j, call)
		h.result <- attempt[T]{val, err}
		if err == nil {
			cancelFirst()
		}
	})
	return h
}

// launched reports whether the hedge started, and keeps it from starting later.
func (h *hedger[T]) launched() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	return h.isLaunched
}

// stop keeps the hedge from starting and cancels it if it did.
func (h *hedger[T]) stop() {
	h.timer.Stop()
	h.launched()
	h.cancel()
}
