package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

// refreshWait bounds how long a write waits for a newer routing table after `moved`
// before it tries again: a slot frozen for a move answers `moved` until the handover
// (then the new table routes the write to the new owner) or the rollback (then the old
// owner takes it again), so the wait grows from movedPause up to refreshWait.
const (
	refreshWait = time.Second
	movedPause  = 50 * time.Millisecond
)

// writeResult is what one shard's primary answered to one write.
type writeResult struct {
	n   int
	seq uint64
}

// writeCall sends one write to a shard's primary.
type writeCall func(ctx context.Context, c *client.Client) (writeResult, error)

// writeOutcome classifies a write error: what the retry loop does next.
type writeOutcome int

const (
	writeDone     writeOutcome = iota // success, or an error the caller gets as is
	writeRefresh                      // moved: wait for a newer table, re-split, retry
	writeRedirect                     // not_primary: retry on the primary it names
	writeBackoff                      // unavailable or unreachable: retry after a pause
)

func classifyWrite(ctx context.Context, err error) writeOutcome {
	if err == nil || ctx.Err() != nil {
		return writeDone
	}
	var ae *client.APIError
	if !errors.As(err, &ae) {
		return writeBackoff // transport error: the primary may be restarting
	}
	switch ae.Code {
	case client.CodeMoved:
		return writeRefresh
	case client.CodeNotPrimary:
		return writeRedirect
	case client.CodeUnavailable:
		return writeBackoff
	}
	return writeDone
}

// shardWrite is the part of a write that goes to one shard.
type shardWrite struct {
	shard int
	call  writeCall
	// keys are what plan gets back as pending when this part must be retried: the
	// indexes of the items it carries (an upsert's vectors, re-split by the new table),
	// or, for planByPartition, the part's own index in the plan that made it.
	keys []int
}

// runWrites executes a write on shard primaries with a bounded retry budget. plan splits
// the (remaining) write by the current view; it is called again for the parts that must
// be retried, with the indexes of the items still pending. It returns the summed count
// and the highest sequence, or the first error the caller should see.
func (r *Router) runWrites(ctx context.Context, op string, plan func(v *view, pending []int) ([]shardWrite, error), items int) (writeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	pending := make([]int, items)
	for i := range pending {
		pending[i] = i
	}
	var total writeResult
	redirect := map[int]string{} // shard -> primary URL named by a not_primary answer
	// Rounds refused only as moved do not count as attempts: a write that meets a frozen
	// slot waits for the handover (or the rollback) until its deadline.
	movedRounds := 0
	for attempt := 0; ; attempt++ {
		v := r.view.Load()
		if v.table == nil {
			return total, apiErr(client.CodeUnavailable, "no routing table yet")
		}
		parts, err := plan(v, pending)
		if err != nil {
			return total, err
		}
		type partResult struct {
			res writeResult
			err error
		}
		results := make([]partResult, len(parts))
		var wg sync.WaitGroup
		for i, p := range parts {
			wg.Go(func() {
				c, err := r.primaryClient(v, p.shard, redirect[p.shard])
				if err == nil {
					results[i].res, err = p.call(ctx, c)
				}
				results[i].err = err
			})
		}
		wg.Wait()

		var retry []int
		var refresh, backoff, other bool
		var why []string
		for i, p := range parts {
			res := results[i]
			switch classifyWrite(ctx, res.err) {
			case writeDone:
				if res.err != nil {
					if ctx.Err() != nil {
						return total, apiErr(client.CodeUnavailable, "shard %d: no answer within the deadline: %v", p.shard, res.err)
					}
					return total, fmt.Errorf("shard %d: %w", p.shard, res.err)
				}
				total.n += res.res.n
				total.seq = max(total.seq, res.res.seq)
				r.bumpSeq(p.shard, res.res.seq)
				continue
			case writeRefresh:
				refresh = true
			case writeRedirect:
				other = true
				var ae *client.APIError
				if errors.As(res.err, &ae) && ae.Primary != "" {
					redirect[p.shard] = ae.Primary
				} else {
					delete(redirect, p.shard)
					refresh = true
				}
			case writeBackoff:
				backoff, other = true, true
				delete(redirect, p.shard)
			}
			why = append(why, fmt.Sprintf("shard %d: %v", p.shard, res.err))
			retry = append(retry, p.keys...)
		}
		if len(why) == 0 {
			return total, nil
		}
		if !other {
			attempt-- // only moved: waiting for a handover costs no attempt
			movedRounds++
		}
		if attempt+1 >= r.cfg.WriteAttempts {
			return total, apiErr(client.CodeUnavailable, "%s failed after %d attempts: %s", op, attempt+1, strings.Join(why, "; "))
		}
		r.m.retries.WithLabelValues(op).Inc()
		if refresh {
			epoch := v.epoch()
			wait := min(refreshWait, movedPause<<min(movedRounds, 5))
			r.awaitView(ctx, wait, func(nv *view) bool { return nv.epoch() > epoch })
			if ctx.Err() != nil {
				return total, apiErr(client.CodeUnavailable, "%s: no answer within the deadline: %s", op, strings.Join(why, "; "))
			}
		}
		if backoff {
			select {
			case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
			case <-ctx.Done():
				return total, apiErr(client.CodeUnavailable, "%s: no answer within the deadline: %s", op, strings.Join(why, "; "))
			}
		}
		pending = retry
	}
}

// primaryClient returns the client of shard k's primary, or of the URL a not_primary
// answer named.
func (r *Router) primaryClient(v *view, k int, redirect string) (*client.Client, error) {
	if redirect != "" {
		return client.New(redirect, client.WithToken(r.cfg.Token), client.WithHTTPClient(r.cfg.HTTPClient)), nil
	}
	s := v.shard(k)
	if s == nil || s.primary == nil {
		return nil, apiErr(client.CodeUnavailable, "shard %d has no ready primary", k)
	}
	return s.primary.c, nil
}

// Upsert splits the batch by owning shard and sends each part to its primary. Parts that
// fail are retried; parts that succeeded stay applied even if another part finally fails
// (each shard applies its part all or nothing), and the error says which shard failed.
func (r *Router) Upsert(ctx context.Context, req *client.UpsertRequest) (*client.UpsertResponse, error) {
	// The whole batch is checked before any part is sent: a part refused by its shard
	// after another shard stored its own would leave the batch half applied.
	if _, err := r.requestSchema(ctx).CheckUpsert(req); err != nil {
		return nil, err
	}
	slotOf := make([]int, len(req.Vectors))
	for i, vec := range req.Vectors {
		slotOf[i] = slots.Of(slots.KeyOf(vec.ID, vec.Partition))
	}
	plan := func(v *view, pending []int) ([]shardWrite, error) {
		byShard := map[int][]int{}
		for _, i := range pending {
			k := v.table.ShardOf(slotOf[i])
			byShard[k] = append(byShard[k], i)
		}
		parts := make([]shardWrite, 0, len(byShard))
		for k, idx := range byShard {
			part := &client.UpsertRequest{Vectors: make([]client.Vector, len(idx))}
			for j, i := range idx {
				part.Vectors[j] = req.Vectors[i]
			}
			parts = append(parts, shardWrite{shard: k, keys: idx, call: func(ctx context.Context, c *client.Client) (writeResult, error) {
				resp, err := c.Upsert(ctx, part)
				if err != nil {
					return writeResult{}, err
				}
				return writeResult{n: resp.Upserted, seq: resp.Seq}, nil
			}})
		}
		slices.SortFunc(parts, func(a, b shardWrite) int { return a.shard - b.shard })
		return parts, nil
	}
	res, err := r.runWrites(ctx, "upsert", plan, len(req.Vectors))
	if err != nil {
		return nil, err
	}
	return &client.UpsertResponse{Upserted: res.n, Seq: res.seq}, nil
}

// DeleteBatch deletes ids from the partition's shard, or, without a partition, from
// every shard (an id alone does not say where a vector with a partition lives).
func (r *Router) DeleteBatch(ctx context.Context, req *client.DeleteRequest) (*client.DeleteResponse, error) {
	if err := r.requestSchema(ctx).CheckDelete(req); err != nil {
		return nil, err
	}
	res, err := r.runWrites(ctx, "delete", r.planByPartition(req.Partition, func(ctx context.Context, c *client.Client) (writeResult, error) {
		resp, err := c.DeleteBatch(ctx, req)
		if err != nil {
			return writeResult{}, err
		}
		return writeResult{n: resp.Deleted, seq: resp.Seq}, nil
	}), 1)
	if err != nil {
		return nil, err
	}
	return &client.DeleteResponse{Deleted: res.n, Seq: res.seq}, nil
}

// Delete deletes one id, like DeleteBatch.
func (r *Router) Delete(ctx context.Context, id, partition string) (*client.DeleteOneResponse, error) {
	if err := checkPathID(id, partition); err != nil {
		return nil, err
	}
	res, err := r.runWrites(ctx, "delete", r.planByPartition(partition, func(ctx context.Context, c *client.Client) (writeResult, error) {
		resp, err := c.Delete(ctx, id, partition)
		if err != nil {
			return writeResult{}, err
		}
		n := 0
		if resp.Deleted {
			n = 1
		}
		return writeResult{n: n, seq: resp.Seq}, nil
	}), 1)
	if err != nil {
		return nil, err
	}
	return &client.DeleteOneResponse{Deleted: res.n > 0, Seq: res.seq}, nil
}

// planByPartition sends one call to the partition's shard, or to every shard without a
// partition. A retry resends to the shards that failed, plus any shard the new table
// added.
func (r *Router) planByPartition(partition string, call writeCall) func(v *view, pending []int) ([]shardWrite, error) {
	done := map[int]bool{}
	var seen int
	var lastParts []shardWrite
	return func(v *view, pending []int) ([]shardWrite, error) {
		if partition != "" {
			return []shardWrite{{shard: v.table.ShardOfKey(partition), call: call, keys: []int{0}}}, nil
		}
		// Shards of the previous round that are not being retried succeeded.
		for _, p := range lastParts {
			done[p.shard] = true
		}
		for _, p := range pending {
			if p >= 0 && p < len(lastParts) {
				delete(done, lastParts[p].shard)
			}
		}
		var parts []shardWrite
		for k := range max(v.numShards(), seen) {
			if !done[k] {
				parts = append(parts, shardWrite{shard: k, call: call, keys: []int{len(parts)}})
			}
		}
		seen = max(seen, v.numShards())
		lastParts = parts
		return parts, nil
	}
}
