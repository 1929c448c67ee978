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
// Slot ownership (slots.go): a standalone shard owns all 4096 slots at epoch 0. The
// state is three sets, owned, frozen (a subset of owned) and importing (disjoint from
// owned), and an epoch, persisted in slots.json (temp file, fsync, rename, fsync of the
// directory). Every change goes through slotState's methods under one rule: a request
// at an epoch older than the shard's is refused (409 conflict), and a routing table
// (--routing-file or the ConfigMap of --index) is adopted only when its epoch is newer,
// in one step under the lock, so a freeze in between is never lost. Writes to a slot
// not owned, frozen or importing get 409 moved with the epoch. Searches and gets see
// only owned slots: importing slots stay hidden until handed over, and slots handed
// away are hidden from the moment the shard knows the new epoch (until dropped).
//
// Slot migration, as the operator drives it (contract B of the coordination notes):
//
//  1. The destination primary gets POST /v1/internal/imports {id, slots, source, epoch e}
//     (idempotent by id). Its job drops anything an earlier copy left, reads the source's
//     export (GET slots:export, taken at the source's applied seq X), applies it in
//     batches through its own WAL (so its replicas replicate it), then follows the
//     source's WAL of the slots (GET slots:wal?from=X+1) and applies each record once, in
//     order: consecutive upserts as one write, AppliedSeq persisted every second. The
//     stream's heartbeats carry how far it has read the source's log, so AppliedSeq
//     passes records of other slots too. After a restart of either side the job resumes
//     from its persisted AppliedSeq (replaying a few records is harmless: upserts and
//     deletes are idempotent in order); if the source's WAL no longer reaches back (410)
//     it copies afresh. The source keeps the WAL a stream still needs: an export or a
//     live stream holds it from its start, per slot set, until 10 minutes after it ends.
//  2. The source freezes the slots (POST slots:freeze {slots, epoch e}): it waits for the
//     writes in flight and answers Seq, after which the slots take no write.
//  3. Once the destination's AppliedSeq >= Seq, the operator writes the table at e+1 and
//     calls POST /v1/internal/imports/{id}:finish {epoch e+1} (or the destination adopts
//     the table): the job stops before the slots take writes, and they become owned.
//     Freeze, unfreeze, drop and finish never move the shard's epoch (only a table or
//     POST slots does), so a shard that lags behind the operator's tables still adopts
//     each newer one; a drop refuses slots the shard owns and does not freeze.
//  4. The source adopts e+1 (table or POST slots) and stops answering for the slots;
//     once every router is at e+1, POST slots:drop deletes them through its WAL.
//
// Rollback before the epoch bump: DELETE /v1/internal/imports/{id} (drops the partial
// copy) and POST slots:unfreeze {slots, epoch e}, refused once the shard is past e.
//
// Reads follow the router's epoch: a router sends its epoch (client.EpochHeader) with
// searches and gets, and a shard answers for the slots it holds for that epoch (see
// Server.hiddenFor): importing slots once the epoch is past the import's, slots handed
// away at a later epoch, everything while it has not seen the epoch yet; the router
// keeps, of each shard's hits, those of the slots its table gives that shard. So
// whichever shard learns the new table first, a merged top-k sees each slot once.
//
// Where this differs from DESIGN.md: the slot hash is named (XXH64, recorded in the
// table); "each slot answered by exactly one shard at every moment" is kept by the
// router's epoch as above, not by the shards alone (each learns the table on its own
// time); and a partition change of an id by upsert during a move is
// seen by the destination only for the id's new slot (its old slot keeps the stale copy
// until the next write or delete of the id there), as the WAL records upserts by their
// new slot only.
//
// Ids are strings; each gets a dense uint64 index key on first upsert, in WAL order, so
// every replica assigns the same keys. An id is unique within the shard whatever its
// partition. Each partition's live keys are listed beside the key metadata (updated on
// the same paths: upsert, delete, slot drop), and a partition-scoped search is planned by
// hnsw.Index.SearchSubset: an exact scan of a small partition's keys, or a walk filtered
// to the partition with ef grown by the share filtered out.
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
