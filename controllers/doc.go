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
//     (decideMigrations, the migration planner's place);
//   - apply: token Secret, RBAC, shard Services, StatefulSets and PDBs (applyShards), the
//     next migration step (applyMigrationStep, the executor's place), the router;
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
// The LoadCollector scrapes GET /v1/load of every ready shard pod every few seconds and
// hands per-shard load (vectors, QPS, p99) to the reconciler for status.shards.
//
// Concurrency: controller-runtime calls Reconcile from its workers, at most once at a time
// per AnnIndex. A reconcile's state lives in a scope created per call; the reconciler
// struct holds only clients, which are safe for concurrent use, and the LoadCollector,
// whose scrape loop runs in its own goroutine and whose windows are behind a mutex.
package controllers
