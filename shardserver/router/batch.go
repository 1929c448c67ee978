package router

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/annshard/annshard/shardserver/client"
)

// batcher merges concurrent searches to one replica into one POST /v1/search:batch.
// The first search of a batch leads. Like Nagle's algorithm it sends at once when
// nothing else is outstanding on the replica (so an idle router adds no delay);
// otherwise it waits up to wait, or until max searches joined, for company. Everyone
// waits for the shared answer. No goroutine lives between batches.
type batcher struct {
	c       *client.Client
	max     int
	wait    time.Duration
	timeout time.Duration
	m       *metrics

	mu          sync.Mutex
	cur         *pendingBatch
	forming     atomic.Bool  // cur is set and has room: a search may join it (read without mu)
	outstanding atomic.Int64 // batches sent and not answered
	// rtt is the EWMA of the time a request to the replica took, in nanoseconds (float64
	// bits; 0 until the first answer): what joining a batch here costs.
	rtt atomic.Uint64
}

// rttAlpha is the weight of the newest round trip in batcher.rtt.
const rttAlpha = 0.2

// observe folds the round trip of one request into rtt.
func (b *batcher) observe(d time.Duration) {
	for {
		old := b.rtt.Load()
		prev := math.Float64frombits(old)
		next := float64(d)
		if prev > 0 {
			next = prev + rttAlpha*(next-prev)
		}
		if b.rtt.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// roundTrip returns the smoothed round trip, 0 when none was seen.
func (b *batcher) roundTrip() float64 { return math.Float64frombits(b.rtt.Load()) }

// joinable reports whether a search sent here now would join a batch already forming.
func (b *batcher) joinable() bool { return b.forming.Load() }

// wouldWait reports whether a search sent here now would lead a new batch and wait for
// company, rather than go at once or join one.
func (b *batcher) wouldWait() bool { return b.outstanding.Load() > 0 && !b.forming.Load() }

type pendingBatch struct {
	epoch uint64 // the routing epoch of every search in it (client.EpochFrom)
	reqs  []client.SearchRequest
	full  chan struct{} // closed when max searches joined
	done  chan struct{} // closed when the answers (or errors) are in
	resps []*client.SearchResponse
	errs  []error
}

func newBatcher(c *client.Client, max int, wait, timeout time.Duration, m *metrics) *batcher {
	return &batcher{c: c, max: max, wait: wait, timeout: timeout, m: m}
}

func (b *batcher) search(ctx context.Context, req *client.SearchRequest) (*client.SearchResponse, error) {
	epoch := client.EpochFrom(ctx)
	b.mu.Lock()
	pb := b.cur
	if pb != nil && pb.epoch != epoch {
		// Shards answer a batch for one epoch; a search of another (the routing table
		// changed meanwhile) goes alone.
		b.mu.Unlock()
		return b.sendAlone(ctx, req)
	}
	leader := pb == nil
	if leader {
		pb = &pendingBatch{epoch: epoch, full: make(chan struct{}), done: make(chan struct{})}
		b.cur = pb
	}
	idx := len(pb.reqs)
	pb.reqs = append(pb.reqs, *req)
	if len(pb.reqs) >= b.max {
		b.cur = nil
		close(pb.full)
	}
	b.forming.Store(b.cur != nil)
	b.mu.Unlock()

	if leader {
		if b.outstanding.Load() > 0 {
			t := time.NewTimer(b.wait)
			select {
			case <-t.C:
			case <-pb.full:
			}
			t.Stop()
		}
		b.mu.Lock()
		if b.cur == pb {
			b.cur = nil
			b.forming.Store(false)
		}
		alone := len(pb.reqs) == 1 // no one joins a batch once it is off b.cur
		b.mu.Unlock()
		if alone {
			// The leader's own search, on its own goroutine and context: a lone search
			// (every search of an idle router) pays for no goroutine and hand-off.
			return b.sendAlone(ctx, req)
		}
		// The batch serves other requests too: it must not die with the leader's context
		// (a cancelled hedge, say), only with the router's own deadline.
		go b.send(context.WithoutCancel(ctx), pb)
	}
	select {
	case <-pb.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return pb.resps[idx], pb.errs[idx]
}

func (b *batcher) sendAlone(ctx context.Context, req *client.SearchRequest) (*client.SearchResponse, error) {
	b.outstanding.Add(1)
	defer b.outstanding.Add(-1)
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	b.m.batchSize.Observe(1)
	start := time.Now()
	resp, err := b.c.Search(ctx, req)
	if err == nil {
		b.observe(time.Since(start))
	}
	return resp, err
}

func (b *batcher) send(ctx context.Context, pb *pendingBatch) {
	b.outstanding.Add(1)
	defer b.outstanding.Add(-1)
	defer close(pb.done)
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	n := len(pb.reqs)
	pb.resps, pb.errs = make([]*client.SearchResponse, n), make([]error, n)
	b.m.batchSize.Observe(float64(n))
	if n == 1 {
		pb.resps[0], pb.errs[0] = b.c.Search(ctx, &pb.reqs[0])
		return
	}
	start := time.Now()
	resp, err := b.c.BatchSearch(ctx, &client.BatchSearchRequest{Queries: pb.reqs})
	if err == nil {
		b.observe(time.Since(start))
	}
	if err == nil && len(resp.Results) != n {
		err = apiErr(client.CodeInternal, "batch of %d searches got %d answers", n, len(resp.Results))
	}
	switch {
	case err == nil:
		for i := range pb.reqs {
			pb.resps[i] = &client.SearchResponse{Results: resp.Results[i], Seq: resp.Seq}
		}
	case callerFault(err):
		// One bad query refuses the whole batch; it must not fail its neighbours, which
		// came from other clients: ask again one by one so each gets its own answer.
		var wg sync.WaitGroup
		for i := range pb.reqs {
			wg.Go(func() { pb.resps[i], pb.errs[i] = b.c.Search(ctx, &pb.reqs[i]) })
		}
		wg.Wait()
	default:
		for i := range pb.errs {
			pb.errs[i] = err
		}
	}
}
