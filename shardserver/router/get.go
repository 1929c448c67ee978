package router

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/annshard/annshard/shardserver/client"
)

// Get fetches one vector by id from a replica of the partition's shard, or, without a
// partition, from every shard at once (the first one that has it answers).
func (r *Router) Get(ctx context.Context, id, partition string) (*client.Vector, error) {
	if id == "" {
		return nil, apiErr(client.CodeInvalidArgument, "empty id")
	}
	v := r.view.Load()
	if v.table == nil {
		return nil, apiErr(client.CodeUnavailable, "no routing table yet")
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	get := func(ctx context.Context, rep *replica) (*client.Vector, error) { return rep.c.Get(ctx, id, partition) }
	if partition != "" {
		k := v.table.ShardOfKey(partition)
		vec, err := readShard(ctx, r, v.shard(k), false, "get", get)
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
			vec, err := readShard(ctx, r, v.shard(k), false, "get", get)
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
