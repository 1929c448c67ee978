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

package v1alpha1

// Condition types of an AnnIndex. The operator sets every one on its first reconcile
// (Unknown if it cannot tell yet) and recomputes them from observed facts on every pass.
const (
	// ConditionAvailable is True when the index answers queries: every shard has a ready
	// primary and at least one router is ready.
	ConditionAvailable = "Available"
	// ConditionProgressing is True while the operator moves the cluster toward the spec:
	// a rollout, a scale, or a recorded reshard.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when the index runs below what the spec asks for (a shard
	// or the routers with fewer ready replicas than desired), or the operator cannot
	// reconcile.
	ConditionDegraded = "Degraded"
	// ConditionScaling is True while a shard's replica count is changing.
	ConditionScaling = "Scaling"
	// ConditionMigrating is True while slots move between shards, Unknown while a reshard
	// is recorded but not started.
	ConditionMigrating = "Migrating"
)

// Reasons of the Available condition.
const (
	// ReasonAvailable: every shard has a ready primary and a router is ready.
	ReasonAvailable = "Available"
	// ReasonShardUnavailable: a shard has no ready primary, so its slots cannot be served.
	ReasonShardUnavailable = "ShardUnavailable"
	// ReasonRouterUnavailable: no router replica is ready.
	ReasonRouterUnavailable = "RouterUnavailable"
)

// Reasons of the Progressing condition.
const (
	// ReasonRollingUpdate: a shard StatefulSet or the router Deployment is rolling out a
	// new pod template.
	ReasonRollingUpdate = "RollingUpdate"
	// ReasonScalingReplicas: a shard is changing its replica count (routers scaling show
	// as RollingUpdate, their new pods not yet updated).
	ReasonScalingReplicas = "ScalingReplicas"
	// ReasonReshardPending: spec.shards differs from the routing table and the reshard is
	// recorded in status.pendingShards (also a reason of Migrating).
	ReasonReshardPending = "ReshardPending"
	// ReasonReconciled: every object matches the spec and has rolled out.
	ReasonReconciled = "Reconciled"
)

// Reasons of the Degraded condition.
const (
	// ReasonReplicasUnready: a shard has fewer ready replicas than it should run.
	ReasonReplicasUnready = "ReplicasUnready"
	// ReasonRouterReplicasUnready: the routers have fewer ready replicas than asked for.
	ReasonRouterReplicasUnready = "RouterReplicasUnready"
	// ReasonReconcileFailed: a reconcile phase returned an error; the message says which.
	ReasonReconcileFailed = "ReconcileFailed"
	// ReasonAsExpected: nothing runs below the spec.
	ReasonAsExpected = "AsExpected"
)

// Reasons of the Scaling condition.
const (
	// ReasonScalingUp: a shard is adding replicas.
	ReasonScalingUp = "ScalingUp"
	// ReasonScalingDown: a shard is removing replicas (highest ordinal first, never the primary).
	ReasonScalingDown = "ScalingDown"
	// ReasonAutoscalingDisabled: autoscaling is off and every shard has replicas.min pods.
	ReasonAutoscalingDisabled = "AutoscalingDisabled"
	// ReasonStable: every shard runs the replica count it should.
	ReasonStable = "Stable"
)

// Reasons of the Migrating condition (ReasonReshardPending too).
const (
	// ReasonMigrationInProgress: at least one slot migration is between Pending and Cleanup.
	ReasonMigrationInProgress = "MigrationInProgress"
	// ReasonMigrationFailed: a slot migration failed; its message says why.
	ReasonMigrationFailed = "MigrationFailed"
	// ReasonNoMigration: no slots are moving and no reshard is pending.
	ReasonNoMigration = "NoMigration"
)

// ReasonPending is the reason of every condition before the operator has observed enough
// to decide it (status Unknown).
const ReasonPending = "Pending"
