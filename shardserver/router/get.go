package router

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

// Get fetches one vector by id from a replica of the partition's shard, or, without a
// partition, from every shard at once (the first one that has it answers).
func (r *Router) Get(ctx context.Context, id, partition string) (*client.Vector, error) {
	if err := checkPathID(id, partition); err != nil {
		return nil, err
	}
	v, unpin := r.pinView()
	defer unpin()
	if v.table == nil {
		return nil, apiErr(client.CodeUnavailable, "no routing table yet")
	}
	ctx, cancel := context.WithTimeout(client.WithEpoch(ctx, v.epoch()), r.cfg.Timeout)
	defer cancel()
	getFrom := func(k int) func(context.Context, *replica) (*client.Vector, error) {
		return r.getter(v.shard(k), k, id, partition)
	}
	if partition != "" {
		k := v.table.ShardOfKey(partition)
		vec, err := readShard(ctx, r, v.shard(k), readGet, "get", getFrom(k))
		if err != nil && !callerFault(err) {
			return nil, fmt.Errorf("shard %d: %w", k, err)
		}
		return vec, err
	}
	n := v.numShards()
	found := make(chan *client.Vector, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for k := range n {
		wg.Go(func() {
			vec, err := readShard(ctx, r, v.shard(k), readGet, "get", getFrom(k))
			if err == nil && v.table.ShardOfKey(slots.KeyOf(vec.ID, vec.Partition)) != k {
				// A shard still holding a slot the table gave away (or importing one it
				// has not been given): the owner answers for it.
				err = apiErr(client.CodeNotFound, "vector %q is in a slot shard %d does not own", id, k)
			}
			if err == nil {
				found <- vec
				cancel() // the others need not finish
				return
			}
			errs[k] = err
		})
	}
	wg.Wait()
	select {
	case vec := <-found:
		return vec, nil
	default:
	}
	var why []string
	for k, err := range errs {
		if err != nil && !client.IsCode(err, client.CodeNotFound) {
			why = append(why, fmt.Sprintf("shard %d: %v", k, err))
		}
	}
	if len(why) > 0 {
		return nil, apiErr(client.CodeUnavailable, "vector %q not found on the shards that answered; %s", id, strings.Join(why, "; "))
	}
	return nil, apiErr(client.CodeNotFound, "vector %q not found", id)
}

// checkPathID checks the id and ?partition= of GET and DELETE /v1/vectors/{id}.
func checkPathID(id, partition string) error {
	if err := client.CheckID("id", id); err != nil {
		return err
	}
	return client.CheckPartition("partition", partition)
}

// getter reads id from a replica of shard k with read-your-writes: an answer (found or
// not_found) given from before a write this router knows of comes from a lagging replica,
// so the primary, which has applied every acknowledged write, answers instead. If the
// primary cannot, the replica's answer stands.
func (r *Router) getter(s *shardSet, k int, id, partition string) func(context.Context, *replica) (*client.Vector, error) {
	known := uint64(0)
	if k >= 0 && k < len(r.seqs) {
		known = r.seqs[k].Load()
	}
	return func(ctx context.Context, rep *replica) (*client.Vector, error) {
		vec, seq, err := rep.c.GetSeq(ctx, id, partition)
		if (err == nil || client.IsCode(err, client.CodeNotFound)) && seq < known {
			if pv, ok, perr := fromPrimary(ctx, s, known, func(ctx context.Context, p *replica) (*client.Vector, uint64, error) {
				return p.c.GetSeq(ctx, id, partition)
			}); ok {
				r.m.retries.WithLabelValues("get_on_primary").Inc()
				return pv, perr
			}
		}
		return vec, err
	}
}

// freshRounds bounds fromPrimary: the first call to the primary normally suffices.
const freshRounds = 3

// fromPrimary finds an answer (a result or not_found) given as of at least seq known: the
// primary first, since it has applied every acknowledged write, then the other ready
// replicas (the router may still take a replica for the primary, say after a failover,
// while the real one sits among the replicas), for a few rounds with short pauses. ok is
// false when no such answer came; the caller keeps the answer it had.
func fromPrimary[T any](ctx context.Context, s *shardSet, known uint64, call func(context.Context, *replica) (T, uint64, error)) (res T, ok bool, err error) {
	if s == nil {
		return res, false, nil
	}
	order := make([]*replica, 0, len(s.replicas)+1)
	if s.primary != nil {
		order = append(order, s.primary)
	}
	for _, rep := range s.replicas {
		if rep != s.primary {
			order = append(order, rep)
		}
	}
	for round := range freshRounds {
		if round > 0 {
			select {
			case <-ctx.Done():
				return res, false, nil
			case <-time.After(time.Duration(2<<round) * time.Millisecond):
			}
		}
		for _, rep := range order {
			got, seq, err := call(ctx, rep)
			if (err == nil || client.IsCode(err, client.CodeNotFound)) && seq >= known {
				return got, true, err
			}
		}
	}
	return res, false, nil
}
