// Package slots maps keys to the 4096 hash slots of an index and holds the routing
// table (slot -> shard, epoch) that the operator writes and the router and shard
// servers read.
//
// A vector's key is its partition when it has one, else its id; [Of] gives its slot,
// the low 12 bits of the key's XXH64, the one placement function of shard servers,
// routers and the operator. XXH64 mixes: sequential and prefix-sharing keys ("tenant0",
// "tenant1", ...) spread over the shards like random ones, which the CRC32C used before
// did not (a linear hash puts keys that differ in a few bits on slots that differ in a
// few fixed patterns). The routing table's JSON records the hash by name ([Hash]), and
// [Parse] refuses a table of another or no hash instead of reading its slots as ours.
// A [Table] is a plain value: copy it, compare it, encode it with [Table.MarshalJSON]
// (the format stored under [ConfigMapKey] in the ConfigMap named by [ConfigMapName]).
// Nothing here is safe for concurrent mutation; share tables by copying or behind a lock.
package slots
