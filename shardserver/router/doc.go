// Package router is the `shardserver route` role: the HTTP front door of an index. It
// speaks the same public API as a shard server (DESIGN.md section 4) and turns each call
// into calls to the shards, only over HTTP through package client:
//
//   - writes go to the primary of the shard that owns each vector's slot (a batch is split
//     by owner); `moved` and `not_primary` answers refresh the routing and retry within a
//     small budget, and the caller gets one answer;
//   - a search goes to the partition's shard, or to every shard, one replica each chosen by
//     a balance.Balancer; the answers merge into one top-k without duplicate ids. A failed
//     or timed-out replica is retried once on another one, a slow one can be hedged, and
//     missing shards are either named (allowPartial) or turn the answer into a 503;
//   - answers are cached (LRU) under the query, the routing epoch and the write sequence
//     of every shard involved, so a write through the router is never followed by a
//     stale cached answer; concurrent searches to one replica can be micro-batched.
//
// The routing table comes from the ConfigMap <index>-routing or a file; the replicas from
// the Pods of each shard or a static list. Both feed one immutable view that is swapped
// atomically, so a request sees one consistent table and replica set from start to end.
//
// Drain: a shard Pod annotated client.DrainAnnotation="true" (set by the operator before
// it removes the replica) is left out of the replicas reads choose from the next view on;
// writes still reach a primary so marked, and a shard whose ready replicas are all
// draining keeps reading from them rather than fail. GET /v1/internal/router (Status)
// reports the epoch the router routes by and, per replica, whether it is draining and how
// many requests may still reach it: those open to it plus the reads pinned to a replaced
// view that offered it. At 0 no request of this router reaches the replica any more.
//
// Concurrency: a *Router serves any number of concurrent requests. Shared mutable state
// is the atomically swapped view (with its count of pinned reads), per-shard and
// per-replica atomic counters, the balancers (lock-free), the cache and batchers (each
// behind its own mutex), and the replaced views and request counters Status reads (under
// the Router's mutexes). Every goroutine the Router starts stops when the context given
// to Run is cancelled.
package router
