package router

import (
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/annshard/annshard/shardserver/client"
)

// openRequests counts the requests a router has open to one replica: sent and not yet
// answered in full (the answer's body closed).
type openRequests struct {
	shard, ordinal int
	n              atomic.Int64
}

// openRequests returns the counter of endpoint ep of shard k, shared by every shard set
// that has held the endpoint, so requests that started before a rebuild stay counted.
func (r *Router) openRequests(k int, ep Endpoint) *openRequests {
	r.openMu.Lock()
	defer r.openMu.Unlock()
	o := r.open[ep.Name]
	if o == nil || o.shard != k || o.ordinal != ep.Ordinal {
		// A name reused by another shard or ordinal is a new replica; requests still open
		// to the old one finish uncounted, which only a static endpoint list can cause.
		o = &openRequests{shard: k, ordinal: ep.Ordinal}
		r.open[ep.Name] = o
	}
	return o
}

// countingClient is hc with a transport that counts the requests open through it in o.
// Load polls are left out: they are the router's own, not requests it routes, and a
// replica that stops answering them is dropped by the poll itself.
func countingClient(hc *http.Client, o *openRequests) *http.Client {
	c := *hc
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = &countingTransport{base: base, open: o}
	return &c
}

type countingTransport struct {
	base http.RoundTripper
	open *openRequests
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path == "/v1/load" {
		return t.base.RoundTrip(req)
	}
	t.open.n.Add(1)
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		t.open.n.Add(-1)
		return nil, err
	}
	resp.Body = &countedBody{ReadCloser: resp.Body, open: t.open}
	return resp, nil
}

// countedBody ends the count of its request when it is closed, once.
type countedBody struct {
	io.ReadCloser
	open *openRequests
	once sync.Once
}

func (b *countedBody) Close() error {
	b.once.Do(func() { b.open.n.Add(-1) })
	return b.ReadCloser.Close()
}

// Status reports the routing epoch and every replica the router knows, per shard: the
// ready ones of the current view, with whether the router still chooses them, and any
// replica it no longer knows that requests may still reach. This is what the operator
// asks every router before it removes a drained pod (contract 1 of the wave 2 plan):
//
//   - Draining is true for a replica marked draining (unless it is its shard's only ready
//     one, see shardSet.fallback) and for one that left the view while requests to it may
//     be open;
//   - InFlight is the requests open to the replica, plus the reads running on a replaced
//     view that still offered it (pinView): such a read may choose it a moment later.
//     Once that is 0 for a replica the current view does not offer, no request of this
//     router reaches it any more.
func (r *Router) Status() client.RouterStatus {
	r.mu.Lock()
	v := r.view.Load()
	pending := map[string]int{}
	for _, old := range r.retired {
		users := int(old.users.Load())
		if users == 0 {
			continue
		}
		for _, s := range old.shards {
			if s == nil {
				continue
			}
			for _, rep := range s.replicas {
				pending[rep.ep.Name] += users
			}
		}
	}
	r.mu.Unlock()
	r.openMu.Lock()
	open := make(map[string]*openRequests, len(r.open))
	for name, o := range r.open {
		open[name] = o
	}
	r.openMu.Unlock()
	inFlight := func(name string) int {
		n := pending[name]
		if o := open[name]; o != nil {
			n += int(o.n.Load())
		}
		return n
	}

	out := client.RouterStatus{Epoch: v.epoch(), Shards: []client.RouterShard{}}
	listed := map[string]bool{}
	byShard := map[int]int{} // shard -> index in out.Shards
	shardOf := func(k int) *client.RouterShard {
		i, ok := byShard[k]
		if !ok {
			i = len(out.Shards)
			byShard[k] = i
			out.Shards = append(out.Shards, client.RouterShard{Shard: k, Endpoints: []client.RouterEndpoint{}})
		}
		return &out.Shards[i]
	}
	for k, s := range v.shards {
		if s == nil {
			continue
		}
		sh := shardOf(k)
		for _, ep := range s.endpoints {
			listed[ep.Name] = true
			sh.Endpoints = append(sh.Endpoints, client.RouterEndpoint{
				Pod: ep.Name, Ordinal: ep.Ordinal, Draining: ep.Draining && !s.fallback, InFlight: inFlight(ep.Name),
			})
		}
	}
	for name, o := range open {
		if listed[name] {
			continue
		}
		if n := inFlight(name); n > 0 {
			sh := shardOf(o.shard)
			sh.Endpoints = append(sh.Endpoints, client.RouterEndpoint{Pod: name, Ordinal: o.ordinal, Draining: true, InFlight: n})
		}
	}
	slices.SortFunc(out.Shards, func(a, b client.RouterShard) int { return a.Shard - b.Shard })
	for _, sh := range out.Shards {
		slices.SortFunc(sh.Endpoints, func(a, b client.RouterEndpoint) int { return a.Ordinal - b.Ordinal })
	}
	return out
}

// serveStatus answers GET /v1/internal/router; like writes, it needs the bearer token
// when the router has one.
func (r *Router) serveStatus(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	if !r.authorized(w, req, "router_status", start) {
		return
	}
	st := r.Status()
	r.answer(w, "router_status", start, &st, nil)
}
