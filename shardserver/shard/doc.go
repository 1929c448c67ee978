// Package shard is `shardserver serve`: one replica of one shard of an annshard index.
// It serves the public HTTP API of DESIGN.md section 4 over an HNSW index
// (shardserver/hnsw), makes every write durable in a write-ahead log before it is
// acknowledged (shardserver/wal), snapshots the index and its id maps periodically,
// replicates from the primary when it is a read replica, exports and drops slot sets
// for migration, and reports its load for the router and the operator.
//
// Data flow of a write: the handler validates the whole batch (nothing is applied
// unless all of it is valid), checks slot ownership, encodes the batch as one WAL record,
// appends it (group commit), applies it to the index in sequence order and only then
// answers. Start-up loads the newest valid snapshot and replays the WAL after it, so
// what was acknowledged is what comes back. A read replica does the same with records
// streamed from the primary, under the primary's sequence numbers.
//
// Slots: a standalone shard owns all 4096; POST /v1/internal/slots sets the owned set
// and epoch, --routing-file or --index (the routing ConfigMap) keep it in step with the
// routing table. Writes to a slot not owned or frozen get 409 moved with the epoch.
//
// Ids are strings; each gets a dense uint64 index key on first upsert, in WAL order, so
// every replica assigns the same keys. An id is unique within the shard whatever its
// partition; a partition-scoped search filters inside the graph walk.
//
// Failure: once the WAL fails, or the index refuses a record the WAL already holds
// (the in-memory state would silently lack it), the store is broken: every request that
// reads or writes vectors, /readyz and /healthz answer 503 unavailable naming the cause
// and the record, annshard_shard_broken{cause} is 1, and no snapshot is written. A
// restart rebuilds the state from the log; a record the index refuses again stops the
// start-up with an error that names it.
//
// Concurrency: a Server is safe for concurrent requests. Writes are applied one record
// at a time in sequence order (Store.applyMu) while their fsyncs are shared; searches
// run concurrently, bounded by GOMAXPROCS, and read-lock the id maps for their walk.
// Freeze and drop of slots wait for in-flight writes to the shard (slotState.gate).
package shard
