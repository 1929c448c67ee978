// Package slots maps keys to the 4096 hash slots of an index and holds the routing
// table (slot -> shard, epoch) that the operator writes and the router and shard
// servers read.
//
// A vector's key is its partition when it has one, else its id; [Of] gives its slot.
// A [Table] is a plain value: copy it, compare it, encode it with [Table.MarshalJSON]
// (the format stored under [ConfigMapKey] in the ConfigMap named by [ConfigMapName]).
// Nothing here is safe for concurrent mutation; share tables by copying or behind a lock.
package slots
