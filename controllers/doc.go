/*
Copyright 2026 The annshard Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Package controllers is the annshard operator's reconciler: it turns an AnnIndex into
// the Kubernetes objects that run it (token Secret, routing ConfigMap, per-shard Service,
// StatefulSet and PodDisruptionBudget, router Deployment and Service, ServiceAccounts and
// Roles) and reports what it observed in the AnnIndex status.
//
// One reconcile runs its phases in one order (DESIGN.md section 6), each a function of a
// shared scope returning (ctrl.Result, error); results merge to the lowest non-zero
// RequeueAfter, so a phase that waits (a drain, a migration step) asks to be called again:
//
//   - observe: the routing table (observeRouting writes the initial one if none exists),
//     the shard StatefulSets (from the API server, not the cache: their replica counts
//     are what decisions start from) and pods, the load;
//   - decide: the replica count of every shard (decideReplicas), the slot moves
//     (decideMigrations, the migration planner);
//   - apply: token Secret, RBAC, shard Services, StatefulSets and PDBs (applyShards), the
//     next step of every migration (applyMigrationStep, the executor), the router;
//   - status: derived from the scope by pure functions and written once, deferred.
//
// Replica counts live in the StatefulSets, never only in status: an index restored from a
// backup with an empty status keeps the replicas its StatefulSets run.
//
// The builders (shardStatefulSet, routerDeployment, ...) are pure functions of the
// AnnIndex and the decisions (a shard's replica count is an argument), so they are tested
// without a cluster; the suite in suite_test.go runs the reconciler against a real
// kube-apiserver and etcd (envtest).
//
// # Slot migration
//
// The routing table in the `<index>-routing` ConfigMap says which shard owns each of the
// 4096 slots at an epoch. Only the migration executor changes it after creation, and only
// after the data moved. The planner (planMigrations, pure) adds moves to
// status.migrations; the executor (migrationEnv, annindex_migrate.go) advances each by
// one idempotent step per reconcile. Copying never runs in Reconcile: the destination's
// primary pulls (an import job: the source's export of the slots, then its WAL), and the
// reconciler polls it with RequeueAfter. A move's phases:
//
//   - Pending: waits until nothing rolls out or is short of ready replicas, fewer than
//     rebalancing.maxConcurrentMigrations moves run, neither shard is in another move (one
//     out of and one into a shard at a time) and both primaries are ready; then it asks
//     the destination to start the import.
//   - Copying, CatchingUp: follow the import (records, bytes, lag, MB/s in the row).
//   - Handoff: once the lag is under HandoffMaxLag, the destination's read replicas are
//     as close behind its primary (the routers read from them at the new epoch), and no
//     other move is in its handoff (handoffs are serial), freeze the slots on the source at the table's epoch e (writes
//     to them are refused as `moved`, and the routers retry them), wait until the
//     destination applied the source's sequence number of the freeze, write the table that
//     gives the slots to the destination at e+1 (the update carries the ConfigMap's
//     resourceVersion), and have the destination take them. The freeze lasts at most
//     HandoffPauseLimit: past it the slots are unfrozen and the move catches up again; after
//     MaxHandoffAttempts it fails, with an event.
//   - Cleanup: once every ready router reports epoch e+1 or later, the source drops the
//     slots. Done.
//
// Before the table write any failure rolls back: the destination cancels its import
// (dropping the partial copy), the source unfreezes, routing never changed, and the move
// is Failed. After it the move only goes forward: a slot frozen for its handoff is never
// unfrozen once its epoch was bumped. Each step starts from what the table says (which
// shard owns the slots) and what the shards answer (a freeze found on the source is taken
// up as the handoff it was), not from memory, so an operator killed in any phase resumes.
//
// A reshard (spec.shards changed) is planned whole: growing, the new StatefulSets are
// created first and the shards over an even share give exactly their excess to those
// under it once their primaries are ready; shrinking, only the removed shards give, the
// table then drops them (Shards = spec.shards, a new epoch), and their StatefulSet,
// Service and PDB are deleted once every router routes by that table and the shard says
// it owns no slot. Load rebalancing (spec.rebalancing) moves slots of a shard whose
// slot-attributable load (partition-scoped queries and writes per slot, from the load
// collector) exceeds the mean by maxLoadSkewPercent in SkewSamples intervals in a row;
// see rebalanceMove for its rules.
//
// The LoadCollector scrapes GET /v1/load of every ready shard pod every few seconds and
// hands per-shard load (vectors, QPS, p99) to the reconciler for status.shards, and
// per-pod load to the autoscaler.
//
// The autoscaler (annindex_autoscale.go, decideScale) is a pure function per shard, each
// shard on its own, with the Kubernetes HPA's rules: desired = ceil(ready pods x
// observed / target), nothing within a 10 % tolerance, clamped to [replicas.min,
// replicas.max]. QPSPerReplica is the mean 10-second query rate of the ready pods,
// CPUUtilization their CPU seconds rate over their CPU request; LatencyP99 is not
// proportional: the worst pod's p99 over target adds one replica (once every pod is
// ready), under half the target removes one. A pod not ready counts as 0 on a scale-up
// and is left out of a scale-down; a ready pod without a fresh report counts as 0 on a
// scale-up and as at-target on a scale-down; a decision that filled-in values would flip
// is not taken; with no report at all nothing is decided. Scale-up goes to the lowest
// recommendation over scaleUpStabilizationSeconds, scale-down to the highest over
// scaleDownStabilizationSeconds (and only once this operator process has watched the
// shard that long). Rate limits: up by at most +2 pods or +100 % per 30 s, down one
// replica at a time, 15 s apart. Invariants, each a named rule with its reason: never the
// primary, never below min, no scale-down while the shard migrates (status.migrations in
// flight from or to it) or rolls out. The history the windows need lives in memory, as
// the HPA's does; the count a decision starts from is the StatefulSet's.
//
// A scale-down never fails a query: the replica to go (the highest ordinal) gets the
// annotation annshard.io/drain=true, routers stop choosing it, and the StatefulSet
// shrinks only when every ready router reports it neither routes to the pod nor has a
// request open to it (GET /v1/internal/router); until then the reconcile requeues. The
// removed replica's volume is kept (whenScaled: Retain), so a replica added back later
// catches up from the WAL. The decision shows in status.shards[k].desiredReplicas and
// observedMetric, the Scaling condition, one event per change of a StatefulSet's
// replicas, and the annshard_index_shard_autoscaler_* gauges.
//
// Concurrency: controller-runtime calls Reconcile from its workers, at most once at a time
// per AnnIndex. A reconcile's state lives in a scope created per call; the reconciler
// struct holds only clients, which are safe for concurrent use, and the LoadCollector,
// whose scrape loop runs in its own goroutine and whose windows are behind a mutex.
package controllers
