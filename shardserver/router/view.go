package router

import (
	"slices"
	"sync/atomic"

	"github.com/annshard/annshard/shardserver/balance"
	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

// view is one consistent picture of the index: the routing table and the replicas of
// every shard. It is immutable once published; updates build a new one.
type view struct {
	table  *slots.Table // nil until a table is known
	shards []*shardSet  // indexed by shard number; nil entries have no known replicas
	// users counts the reads running on this view (Router.pinView). Once the view is
	// replaced, its count says whether a read may still choose a replica the new view no
	// longer offers (Router.Status).
	users atomic.Int64
}

// epoch returns the routing epoch, 0 without a table.
func (v *view) epoch() uint64 {
	if v.table == nil {
		return 0
	}
	return v.table.Epoch
}

// numShards is the number of shards a search fans out to.
func (v *view) numShards() int {
	if v.table == nil {
		return 0
	}
	return v.table.Shards
}

func (v *view) shard(k int) *shardSet {
	if k < 0 || k >= len(v.shards) {
		return nil
	}
	return v.shards[k]
}

// shardSet is the replica set of one shard with its balancer. It is rebuilt only when
// the set of endpoints changes, so the balancer keeps what it learned across table
// updates.
type shardSet struct {
	id        int
	endpoints []Endpoint // every ready endpoint, draining ones included, by ordinal
	replicas  []*replica // the replicas reads pick among, by ordinal: the non-draining ones
	// fallback is set when every ready replica is draining: reads then pick among them
	// rather than fail.
	fallback bool
	primary  *replica // ordinal 0 when ready, else nil; writes go to it even if draining
	bal      balance.Balancer
	lat      *latencyWindow // recent latencies, for the hedging threshold
}

// replica is one endpoint with its client and metric handles.
type replica struct {
	ep    Endpoint
	c     *client.Client
	down  atomic.Bool // the last load poll failed or said not ready; reads avoid it while others exist
	batch *batcher    // nil when micro-batching is off
	obs   *replicaMetrics
}

// sameEndpoints reports whether a shard set already serves exactly eps, drain marks
// included.
func (s *shardSet) sameEndpoints(eps []Endpoint) bool {
	return s != nil && slices.Equal(s.endpoints, eps)
}

// pick chooses a replica for a read, avoiding exclude and, while another one is left,
// replicas whose load poll failed. It returns -1 when there is none.
func (s *shardSet) pick(exclude int) int {
	i := s.bal.Pick(exclude)
	if i >= 0 && s.replicas[i].down.Load() {
		if j := s.bal.Pick(i); j >= 0 && j != exclude && !s.replicas[j].down.Load() {
			return j
		}
	}
	return i
}

// pickSearch is pick for a search that goes through the replicas' micro-batchers. When
// the chosen replica would make it lead a new batch and wait for company, while a batch
// is forming on another replica that answers about as fast (its requests' smoothed
// round trip at most a quarter longer), it joins that one: it leaves no later, and one
// request carries both. The balancer still places every batch's leader, so it decides
// where the load goes batch by batch, and a replica it keeps probing because it is slow
// (a slow link, say) attracts no company. Without this, replicas split each burst of
// searches (the answers of one batch release their clients together) into batches of
// half the size, and every request costs both the router and the shard a round of HTTP.
func (s *shardSet) pickSearch(exclude int) int {
	i := s.pick(exclude)
	if i < 0 || s.replicas[i].batch == nil || !s.replicas[i].batch.wouldWait() {
		return i
	}
	limit := s.replicas[i].batch.roundTrip() * 1.25
	for j, rep := range s.replicas {
		if j == i || j == exclude || rep.down.Load() || !rep.batch.joinable() {
			continue
		}
		if rtt := rep.batch.roundTrip(); rtt > 0 && rtt <= limit {
			return j
		}
	}
	return i
}
