package router

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/annshard/annshard/shardserver/balance"
	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

// Config is what a Router needs besides its sources of routing and endpoints.
type Config struct {
	// Policy chooses the replica of a shard for each read.
	Policy balance.Policy
	// Token is sent as a bearer token on every call to a shard, and required on writes
	// to the router itself when set.
	Token string
	// Timeout bounds every request end to end. Default 5s.
	Timeout time.Duration
	// HedgePercentile, in (0, 100), sends a second read to another replica once a shard
	// has not answered within that percentile of its recent latencies; 0 disables it.
	HedgePercentile float64
	// CacheEntries is the size of the result cache; 0 disables it.
	CacheEntries int
	// BatchMax and BatchWait turn on micro-batching of concurrent searches to one replica:
	// up to BatchMax queries or BatchWait, whichever comes first. BatchMax < 2 disables it.
	BatchMax  int
	BatchWait time.Duration
	// LoadInterval is how often each replica's /v1/load is polled. Default 1s.
	LoadInterval time.Duration
	// WriteAttempts bounds the tries of one write (refreshing routing between them).
	// Default 4.
	WriteAttempts int
	// HTTPClient is used for every call to a shard; default has a pool sized for fan-out.
	HTTPClient *http.Client
	// Seed fixes the balancers' randomness (tests); 0 seeds from the clock.
	Seed uint64
}

func (c *Config) defaults() {
	if c.Policy == "" {
		c.Policy = balance.Adaptive
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.LoadInterval <= 0 {
		c.LoadInterval = time.Second
	}
	if c.WriteAttempts <= 0 {
		c.WriteAttempts = 4
	}
	if c.BatchWait <= 0 {
		c.BatchWait = 200 * time.Microsecond
	}
	if c.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = 1024
		t.MaxIdleConnsPerHost = 256
		t.IdleConnTimeout = 90 * time.Second
		c.HTTPClient = &http.Client{Transport: t}
	}
}

// Router routes the public API to the shards. Build it with New, feed it a table and
// endpoints (SetTable, SetEndpoints, or the sources in Main) and serve Handler.
type Router struct {
	cfg   Config
	view  atomic.Pointer[view]
	seqs  [slots.MaxShards]atomic.Uint64 // last known write sequence per shard
	cache *resultCache
	m     *metrics

	mu        sync.Mutex // serializes view rebuilds
	table     *slots.Table
	endpoints map[int][]Endpoint
	changed   chan struct{} // closed and replaced on every new view
	// retired are replaced views that reads may still run on (users > 0); Status counts
	// them, and each rebuild forgets those no read uses any more.
	retired []*view

	// open counts the requests open to each replica, by endpoint name; its entries
	// outlive the shard sets (rebuilt when endpoints change) that share them.
	openMu sync.Mutex
	open   map[string]*openRequests

	refresh atomic.Pointer[func()] // asks the table source to re-read now

	// schema is what the shards accept, from their load reports; nil until the first.
	schema      atomic.Pointer[client.Schema]
	schemaMu    sync.Mutex
	schemaTried time.Time // last fetchSchema attempt, under schemaMu
}

// New returns a Router with no table and no endpoints yet.
func New(cfg Config) (*Router, error) {
	cfg.defaults()
	if _, err := balance.New(cfg.Policy, 0); err != nil {
		return nil, fmt.Errorf("new router: %w", err)
	}
	if cfg.HedgePercentile < 0 || cfg.HedgePercentile >= 100 {
		return nil, fmt.Errorf("new router: hedge percentile %g not in [0, 100)", cfg.HedgePercentile)
	}
	r := &Router{
		cfg:     cfg,
		cache:   newResultCache(cfg.CacheEntries),
		m:       newMetrics(cfg.Policy),
		changed: make(chan struct{}),
		open:    map[string]*openRequests{},
	}
	r.view.Store(&view{})
	return r, nil
}

// SetTable installs a routing table. An older epoch than the current one is ignored, so
// a late event cannot roll routing back.
func (r *Router) SetTable(t slots.Table) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.table != nil && t.Epoch < r.table.Epoch {
		return
	}
	r.table = &t
	r.rebuildLocked()
}

// SetEndpoints installs the ready endpoints of every shard (a full replacement).
func (r *Router) SetEndpoints(eps map[int][]Endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endpoints = eps
	r.rebuildLocked()
}

// setRefresh registers how to make the table source re-read now (after `moved`).
func (r *Router) setRefresh(f func()) { r.refresh.Store(&f) }

func (r *Router) rebuildLocked() {
	old := r.view.Load()
	n := 0
	if r.table != nil {
		n = r.table.Shards
	}
	for k := range r.endpoints {
		n = max(n, k+1)
	}
	n = min(n, slots.MaxShards)
	nv := &view{table: r.table, shards: make([]*shardSet, n)}
	for k := range n {
		eps := r.endpoints[k]
		if prev := old.shard(k); prev.sameEndpoints(eps) {
			nv.shards[k] = prev
			continue
		}
		nv.shards[k] = r.newShardSet(k, eps)
	}
	r.view.Store(nv)
	r.retired = slices.DeleteFunc(append(r.retired, old), func(v *view) bool { return v.users.Load() == 0 })
	close(r.changed)
	r.changed = make(chan struct{})
}

// pinView returns the current view for a read and counts the read as its user until
// unpin is called. The count is checked against the view still being current, so a
// read either runs on a view that Status sees as used, or on a newer one.
func (r *Router) pinView() (v *view, unpin func()) {
	for {
		v = r.view.Load()
		v.users.Add(1)
		if r.view.Load() == v {
			return v, func() { v.users.Add(-1) }
		}
		v.users.Add(-1)
	}
}

func (r *Router) newShardSet(k int, eps []Endpoint) *shardSet {
	active := slices.DeleteFunc(slices.Clone(eps), func(ep Endpoint) bool { return ep.Draining })
	fallback := len(active) == 0 && len(eps) > 0
	if fallback {
		// Better a draining replica than a failed read: the operator drains a replica only
		// while others are ready, so this lasts until they are seen again.
		active = eps
	}
	var opts []balance.Option
	if r.cfg.Seed != 0 {
		opts = append(opts, balance.WithSeed(r.cfg.Seed+uint64(k)))
	}
	bal, err := balance.New(r.cfg.Policy, len(active), opts...)
	if err != nil {
		// New validated the policy; a failure here is a programming error, but keep
		// serving with the baseline policy rather than crash.
		bal, _ = balance.New(balance.RoundRobin, len(active))
	}
	s := &shardSet{id: k, endpoints: slices.Clone(eps), fallback: fallback, bal: bal, lat: newLatencyWindow(r.cfg.HedgePercentile)}
	label := strconv.Itoa(k)
	newReplica := func(ep Endpoint) *replica {
		hc := countingClient(r.cfg.HTTPClient, r.openRequests(k, ep))
		rep := &replica{
			ep:  ep,
			c:   client.New(ep.URL, client.WithToken(r.cfg.Token), client.WithHTTPClient(hc)),
			obs: r.m.forReplica(label, ep.Name),
		}
		if r.cfg.BatchMax >= 2 {
			rep.batch = newBatcher(rep.c, r.cfg.BatchMax, r.cfg.BatchWait, r.cfg.Timeout, r.m)
		}
		return rep
	}
	for _, ep := range active {
		rep := newReplica(ep)
		s.replicas = append(s.replicas, rep)
		if ep.Ordinal == 0 {
			s.primary = rep
		}
	}
	if s.primary == nil {
		if i := slices.IndexFunc(eps, func(ep Endpoint) bool { return ep.Ordinal == 0 }); i >= 0 {
			s.primary = newReplica(eps[i]) // draining, yet the one that takes writes
		}
	}
	return s
}

// awaitView waits until the view satisfies ok, asking the table source to refresh, for
// at most wait. It reports whether ok became true.
func (r *Router) awaitView(ctx context.Context, wait time.Duration, ok func(*view) bool) bool {
	if f := r.refresh.Load(); f != nil {
		(*f)()
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if ok(r.view.Load()) {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return ok(r.view.Load())
		case <-ctx.Done():
			return false
		}
	}
}

// Ready returns nil when the router can serve: a table is known and every shard has at
// least one ready replica whose load poll has not failed.
func (r *Router) Ready() error {
	v := r.view.Load()
	if v.table == nil {
		return errors.New("no routing table yet")
	}
	var missing []int
	for k := range v.numShards() {
		s := v.shard(k)
		if s == nil || !slices.ContainsFunc(s.replicas, func(rp *replica) bool { return !rp.down.Load() }) {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("shards %v have no ready replica", missing)
	}
	return nil
}

// bumpSeq raises the known write sequence of shard k to at least seq.
func (r *Router) bumpSeq(k int, seq uint64) {
	if k < 0 || k >= len(r.seqs) {
		return
	}
	for {
		cur := r.seqs[k].Load()
		if seq <= cur || r.seqs[k].CompareAndSwap(cur, seq) {
			return
		}
	}
}

// Run polls the replicas' load reports until ctx ends; the balancers and the cache's
// write sequences feed on them.
func (r *Router) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.LoadInterval)
	defer t.Stop()
	for {
		r.pollLoad(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Router) pollLoad(ctx context.Context) {
	v := r.view.Load()
	var wg sync.WaitGroup
	for _, s := range v.shards {
		if s == nil {
			continue
		}
		for i, rep := range s.replicas {
			wg.Go(func() {
				pctx, cancel := context.WithTimeout(ctx, max(r.cfg.LoadInterval, time.Second))
				defer cancel()
				lr, err := rep.c.LoadSummary(pctx)
				if err != nil {
					if ctx.Err() == nil {
						rep.down.Store(true)
					}
					return
				}
				rep.down.Store(!lr.Ready)
				if lr.Schema != nil {
					r.schema.Store(lr.Schema)
				}
				s.bal.Report(i, loadOf(lr))
				r.bumpSeq(s.id, lr.WALSeq)
			})
		}
	}
	wg.Wait()
}

// loadOf converts a replica's load report for the balancer. Capacity, for weighted
// round-robin, is estimated as the rate one request slot sustains (1/p50), so a replica
// that serves twice as slowly gets half the weight.
func loadOf(lr *client.LoadReport) balance.Load {
	l := balance.Load{QueueDepth: float64(max(lr.QueueDepth, 0))}
	if lr.LatencyP50Ms > 0 {
		l.ServiceTime = time.Duration(lr.LatencyP50Ms * float64(time.Millisecond))
		l.Capacity = 1000 / lr.LatencyP50Ms
	}
	return l
}

// requestSchema is what requests are checked against before any part of them is sent:
// the shards' schema, or, before the first load report, shape checks and the router's
// own bounds only (the shards then check the rest).
func (r *Router) requestSchema(ctx context.Context) client.Schema {
	var sc client.Schema
	p := r.schema.Load()
	if p == nil {
		p = r.fetchSchema(ctx)
	}
	if p != nil {
		sc = *p
	}
	if sc.MaxK == 0 {
		sc.MaxK = MaxK
	}
	if sc.MaxBodyBytes == 0 {
		sc.MaxBodyBytes = MaxBodyBytes
	}
	return sc
}

// fetchSchema asks the replicas for their schema before the first load poll has brought
// it (a router that just started), at most once a second. Without it a batch whose
// items exceed a shard limit could be split, and stored, in parts.
func (r *Router) fetchSchema(ctx context.Context) *client.Schema {
	r.schemaMu.Lock()
	defer r.schemaMu.Unlock()
	if p := r.schema.Load(); p != nil || time.Since(r.schemaTried) < time.Second {
		return p
	}
	r.schemaTried = time.Now()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for _, s := range r.view.Load().shards {
		if s == nil {
			continue
		}
		for _, rep := range s.replicas {
			if lr, err := rep.c.LoadSummary(ctx); err == nil && lr.Schema != nil {
				r.schema.Store(lr.Schema)
				return lr.Schema
			}
		}
	}
	return nil
}

// apiErr builds the router's own error answers.
func apiErr(code, format string, args ...any) *client.APIError {
	return &client.APIError{Code: code, Message: fmt.Sprintf(format, args...), HTTPStatus: client.StatusFor(code)}
}

// callerFault reports whether err is the request's own fault (bad input, missing id,
// refused token), which no other replica would answer differently.
func callerFault(err error) bool {
	var ae *client.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Code {
	case client.CodeInvalidArgument, client.CodeNotFound, client.CodePayloadTooLarge, client.CodeUnauthorized:
		return true
	}
	return false
}
