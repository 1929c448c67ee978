package router

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

// MaxK bounds k at the router until it knows the shards' limit (client.Schema), so a
// query cannot make it merge unbounded lists.
const MaxK = 10000

// Search answers one query: the partition's shard or every shard, merged top-k.
func (r *Router) Search(ctx context.Context, req *client.SearchRequest) (*client.SearchResponse, error) {
	vec, err := r.requestSchema(ctx).CheckSearch("", req)
	if err != nil {
		return nil, err
	}
	v, unpin := r.pinView()
	defer unpin()
	if v.table == nil {
		return nil, apiErr(client.CodeUnavailable, "no routing table yet")
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	return r.search(ctx, v, vec, req)
}

func (r *Router) search(ctx context.Context, v *view, vec []float32, req *client.SearchRequest) (*client.SearchResponse, error) {
	// Shards answer for the slots they hold at this epoch; ownHits keeps each one's own.
	ctx = client.WithEpoch(ctx, v.epoch())
	var targets []int
	if req.Partition != "" {
		targets = []int{v.table.ShardOfKey(req.Partition)}
	} else {
		targets = make([]int, v.numShards())
		for k := range targets {
			targets[k] = k
		}
	}
	// Known sequences are read before asking the shards: an answer is cached under them
	// only if every shard answered at least that fresh.
	seqs := make([]uint64, len(targets))
	for i, k := range targets {
		seqs[i] = r.seqs[k].Load()
	}
	var key string
	if r.cache != nil {
		key = searchKey(vec, req, v.epoch(), targets, seqs)
		if hits, ok := r.cache.get(key); ok {
			r.m.cacheHits.Inc()
			return &client.SearchResponse{Results: hits}, nil
		}
		r.m.cacheMisses.Inc()
	}

	// The shards get the vector in its compact form whatever the client sent.
	sreq := &client.SearchRequest{VectorB64: req.VectorB64, K: req.K, Ef: req.Ef, Partition: req.Partition}
	if sreq.VectorB64 == "" {
		sreq.VectorB64 = client.EncodeB64(vec)
	}
	answers := make([]*client.SearchResponse, len(targets))
	errs := make([]error, len(targets))
	one := func(i int) {
		s := v.shard(targets[i])
		answers[i], errs[i] = readShard(ctx, r, s, readSearch, "search",
			func(ctx context.Context, rep *replica) (*client.SearchResponse, error) {
				return r.callSearch(ctx, rep, sreq)
			})
		// Read your writes: an answer given from before a write this router knows of
		// (one it acknowledged, or a newer sequence a load report showed) comes from a
		// lagging replica; the primary answers instead. If it cannot, the answer stands.
		if errs[i] == nil && answers[i].Seq < seqs[i] {
			if a, ok, err := fromPrimary(ctx, s, seqs[i], func(ctx context.Context, rep *replica) (*client.SearchResponse, uint64, error) {
				a, err := r.callSearch(ctx, rep, sreq)
				if err != nil {
					return nil, 0, err
				}
				return a, a.Seq, nil
			}); ok && err == nil {
				answers[i] = a
				r.m.retries.WithLabelValues("search_on_primary").Inc()
			}
		}
	}
	// The first shard is asked on this goroutine, the others each on its own.
	var wg sync.WaitGroup
	for i := 1; i < len(targets); i++ {
		wg.Go(func() { one(i) })
	}
	if len(targets) > 0 {
		one(0)
	}
	wg.Wait()

	lists := make([][]client.Hit, 0, len(targets))
	var missing []int
	var why []string
	fresh := true
	for i, k := range targets {
		if err := errs[i]; err != nil {
			if callerFault(err) {
				return nil, err
			}
			missing = append(missing, k)
			why = append(why, fmt.Sprintf("shard %d: %v", k, err))
			continue
		}
		r.bumpSeq(k, answers[i].Seq)
		fresh = fresh && answers[i].Seq >= seqs[i]
		lists = append(lists, ownHits(v, k, answers[i].Results))
	}
	if len(missing) > 0 && !req.AllowPartial {
		return nil, apiErr(client.CodeUnavailable, "%s", strings.Join(why, "; "))
	}
	resp := &client.SearchResponse{Results: mergeTopK(lists, req.K), Partial: len(missing) > 0, MissingShards: missing}
	if resp.Results == nil {
		resp.Results = []client.Hit{}
	}
	if len(targets) == 1 && len(missing) == 0 {
		resp.Seq = answers[0].Seq
	}
	if key != "" && len(missing) == 0 && fresh {
		r.cache.put(key, slices.Clip(resp.Results))
	}
	return resp, nil
}

// ownHits keeps the hits of slots the view's table gives shard k: during a slot move
// the source and the destination may both hold a slot, and only its owner at the
// router's epoch answers for it, so a merged top-k has no duplicate and no gap.
func ownHits(v *view, k int, hits []client.Hit) []client.Hit {
	for i, h := range hits {
		if v.table.ShardOfKey(slots.KeyOf(h.ID, h.Partition)) != k {
			out := slices.Clone(hits[:i])
			for _, h := range hits[i+1:] {
				if v.table.ShardOfKey(slots.KeyOf(h.ID, h.Partition)) == k {
					out = append(out, h)
				}
			}
			return out
		}
	}
	return hits
}

func (r *Router) callSearch(ctx context.Context, rep *replica, req *client.SearchRequest) (*client.SearchResponse, error) {
	if rep.batch != nil {
		return rep.batch.search(ctx, req)
	}
	return rep.c.Search(ctx, req)
}

// BatchSearch answers several queries; each is routed like Search. One failed query
// fails the batch, since the answer format has no per-query error.
func (r *Router) BatchSearch(ctx context.Context, req *client.BatchSearchRequest) (*client.BatchSearchResponse, error) {
	v, unpin := r.pinView()
	defer unpin()
	if v.table == nil {
		return nil, apiErr(client.CodeUnavailable, "no routing table yet")
	}
	vecs, err := r.requestSchema(ctx).CheckBatchSearch(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	out := &client.BatchSearchResponse{Results: make([][]client.Hit, len(req.Queries))}
	errs := make([]error, len(req.Queries))
	sem := make(chan struct{}, 8) // bounds the fan-out of one batch
	var wg sync.WaitGroup
	for i := range req.Queries {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			resp, err := r.search(ctx, v, vecs[i], &req.Queries[i])
			if err != nil {
				errs[i] = fmt.Errorf("queries[%d]: %w", i, err)
				return
			}
			out.Results[i] = resp.Results
		})
	}
	wg.Wait()
	// The first failed query decides the answer; its error keeps its API code.
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
