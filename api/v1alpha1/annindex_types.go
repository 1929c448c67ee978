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

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxShards bounds spec.shards. It equals slots.MaxShards of the data plane; the API
// package does not import the data plane, so a test in controllers/ keeps the two equal.
const MaxShards = 256

// Metric is the distance an index ranks neighbours by.
// +kubebuilder:validation:Enum=L2;Cosine;InnerProduct
type Metric string

// The metrics the shard server implements.
const (
	MetricL2           Metric = "L2"
	MetricCosine       Metric = "Cosine"
	MetricInnerProduct Metric = "InnerProduct"
)

// Quantization is how a shard's HNSW graph stores vectors.
// +kubebuilder:validation:Enum=None;Int8
type Quantization string

const (
	// QuantizationNone keeps float32 vectors in the graph.
	QuantizationNone Quantization = "None"
	// QuantizationInt8 keeps one byte per dimension in the graph (per-dimension scale
	// and offset learned from the data): about a third of the memory and faster walks.
	// The float32 vectors stay in a file on the shard's volume, read through the page
	// cache, and re-rank each search's candidates, so results and distances are exact.
	QuantizationInt8 Quantization = "Int8"
)

// WALSync says when a write is durable before it is acknowledged.
// +kubebuilder:validation:Enum=Always;Interval
type WALSync string

const (
	// WALSyncAlways acknowledges a write only after an fsync (group commit shares one fsync
	// among concurrent writers).
	WALSyncAlways WALSync = "Always"
	// WALSyncInterval acknowledges once the write is in the WAL's page cache and fsyncs on a
	// timer: faster, but a machine crash may lose the last interval.
	WALSyncInterval WALSync = "Interval"
)

// LoadBalancing is the policy a router uses to pick one ready replica of a shard.
// +kubebuilder:validation:Enum=RoundRobin;WeightedRoundRobin;LeastConnections;PowerOfTwoChoices;Adaptive
type LoadBalancing string

// The replica-selection policies of shardserver/balance.
const (
	LoadBalancingRoundRobin         LoadBalancing = "RoundRobin"
	LoadBalancingWeightedRoundRobin LoadBalancing = "WeightedRoundRobin"
	LoadBalancingLeastConnections   LoadBalancing = "LeastConnections"
	LoadBalancingPowerOfTwoChoices  LoadBalancing = "PowerOfTwoChoices"
	LoadBalancingAdaptive           LoadBalancing = "Adaptive"
)

// AutoscalingMetric is the per-replica signal the autoscaler compares with its target.
// +kubebuilder:validation:Enum=QPSPerReplica;CPUUtilization;LatencyP99
type AutoscalingMetric string

const (
	// AutoscalingQPSPerReplica targets queries per second per replica.
	AutoscalingQPSPerReplica AutoscalingMetric = "QPSPerReplica"
	// AutoscalingCPUUtilization targets CPU use in percent of the replica's CPU request.
	AutoscalingCPUUtilization AutoscalingMetric = "CPUUtilization"
	// AutoscalingLatencyP99 targets the replica's p99 search latency in milliseconds.
	AutoscalingLatencyP99 AutoscalingMetric = "LatencyP99"
)

// MigrationPhase is the step a slot migration is at. The executor keeps it in status so an
// operator restart resumes the move where it stopped.
// +kubebuilder:validation:Enum=Pending;Copying;CatchingUp;Handoff;Cleanup;Done;Failed
type MigrationPhase string

// The phases of a slot migration, in order; Failed may follow any of them.
const (
	MigrationPending    MigrationPhase = "Pending"
	MigrationCopying    MigrationPhase = "Copying"
	MigrationCatchingUp MigrationPhase = "CatchingUp"
	MigrationHandoff    MigrationPhase = "Handoff"
	MigrationCleanup    MigrationPhase = "Cleanup"
	MigrationDone       MigrationPhase = "Done"
	MigrationFailed     MigrationPhase = "Failed"
)

// AnnIndexSpec is what the user asks for: one HNSW index of a fixed dimension and metric,
// split into shards, each shard a primary plus read replicas, behind query routers.
type AnnIndexSpec struct {
	// Dimension is the length of every vector. It is fixed for the life of the index,
	// because the graph and the stored vectors cannot be converted.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65536
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="dimension is immutable: create a new index to change it"
	Dimension int32 `json:"dimension"`

	// Metric is the distance neighbours are ranked by: L2, Cosine or InnerProduct. It is
	// fixed for the life of the index, because the graph was built for it.
	// +kubebuilder:default=L2
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="metric is immutable: create a new index to change it"
	// +optional
	Metric Metric `json:"metric,omitempty"`

	// Shards is the number of shards the 4096 hash slots are spread over. Changing it is
	// recorded as a pending reshard, carried out online by slot migration; a shard that
	// holds data is never deleted.
	// +kubebuilder:default=1
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 256",message="shards must be between 1 and 256"
	// +optional
	Shards int32 `json:"shards,omitempty"`

	// Replicas bounds the pods of each shard, primary included. The shard runs min
	// replicas, more when the autoscaler asks for them, never more than max.
	// +kubebuilder:default={min: 1, max: 3}
	// +optional
	Replicas ReplicaRange `json:"replicas,omitempty"`

	// HNSW holds the graph's build and search parameters. Changing them rolls the shard pods.
	// +kubebuilder:default={}
	// +optional
	HNSW HNSWSpec `json:"hnsw,omitempty"`

	// ShardServer configures the shard pods (`shardserver serve`).
	// +kubebuilder:default={}
	// +optional
	ShardServer ShardServerSpec `json:"shardServer,omitempty"`

	// Router configures the query routers (`shardserver route`).
	// +kubebuilder:default={}
	// +optional
	Router RouterSpec `json:"router,omitempty"`

	// Autoscaling adds read replicas to hot shards and removes them when load falls.
	// +kubebuilder:default={enabled: false, metric: QPSPerReplica, target: 200, scaleUpStabilizationSeconds: 0, scaleDownStabilizationSeconds: 300}
	// +optional
	Autoscaling AutoscalingSpec `json:"autoscaling,omitempty"`

	// Rebalancing moves slots from hot shards to cold ones when load drifts apart.
	// +kubebuilder:default={}
	// +optional
	Rebalancing RebalancingSpec `json:"rebalancing,omitempty"`
}

// ReplicaRange is the number of pods of one shard, primary included.
// +kubebuilder:validation:XValidation:rule="self.min <= self.max",message="replicas.min must be less than or equal to replicas.max"
type ReplicaRange struct {
	// Min is the number of replicas a shard always runs; 1 means the primary alone.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +optional
	Min int32 `json:"min,omitempty"`

	// Max is the most replicas the autoscaler may give a shard.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +optional
	Max int32 `json:"max,omitempty"`
}

// HNSWSpec holds the graph parameters; the defaults suit most data up to a few hundred
// dimensions (recall@10 above 0.95).
type HNSWSpec struct {
	// M is the number of links per node above layer 0 (2*M at layer 0). Higher M raises
	// recall and memory.
	// +kubebuilder:default=16
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=128
	// +optional
	M int32 `json:"m,omitempty"`

	// EfConstruction is the candidate list size while inserting. Higher builds a better
	// graph, more slowly.
	// +kubebuilder:default=200
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4096
	// +optional
	EfConstruction int32 `json:"efConstruction,omitempty"`

	// EfSearch is the default candidate list size of a search (a request may override it).
	// Higher raises recall and latency.
	// +kubebuilder:default=64
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4096
	// +optional
	EfSearch int32 `json:"efSearch,omitempty"`

	// Quantization is how each shard's graph stores vectors: None (float32) or Int8
	// (see QuantizationInt8). Changing it rolls the shards; each one converts its graph
	// from its snapshot on restart (snapshots hold float32 vectors either way).
	// +kubebuilder:default=None
	// +optional
	Quantization Quantization `json:"quantization,omitempty"`
}

// ShardServerSpec configures the pods of every shard.
type ShardServerSpec struct {
	// Image is the shardserver container image; the routers run it too.
	// +kubebuilder:default="annshard/shardserver:v0.1.0"
	// +kubebuilder:validation:MinLength=1
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the shard and router containers; empty uses the Kubernetes default.
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Resources of the shardserver container. An HNSW index lives in memory: request
	// enough for vectors*dimension*4 bytes plus the graph.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// Storage is the volume of each replica (WAL and snapshots). It is immutable because a
	// StatefulSet cannot change its volume claim templates.
	// +kubebuilder:default={}
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="shardServer.storage is immutable: a StatefulSet cannot change its volume claims"
	// +optional
	Storage StorageSpec `json:"storage,omitempty"`

	// WALSync is when a write becomes durable: Always (fsync, with group commit, before the
	// acknowledgement) or Interval (fsync on a timer).
	// +kubebuilder:default=Always
	// +optional
	WALSync WALSync `json:"walSync,omitempty"`

	// Scheduling constrains where shard pods run. Unless scheduling.affinity sets a
	// podAntiAffinity, the operator adds a preferred one that spreads a shard's replicas
	// over nodes.
	// +optional
	Scheduling Scheduling `json:"scheduling,omitempty"`
}

// StorageSpec is the persistent volume of one shard replica.
type StorageSpec struct {
	// Size of each replica's volume (a pointer, so that a Go client that leaves it unset
	// gets the default instead of a zero-sized volume).
	// +kubebuilder:default="10Gi"
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// StorageClassName of the volume claims; unset uses the cluster's default class.
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
}

// Scheduling holds the pod placement settings passed through to the shard pods.
type Scheduling struct {
	// NodeSelector restricts shard pods to nodes with these labels.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations let shard pods run on tainted nodes.
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Affinity adds node and pod affinity rules. Its podAntiAffinity replaces the
	// operator's default spreading of a shard's replicas.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
}

// RouterSpec configures the query routers.
type RouterSpec struct {
	// Replicas is the number of router pods.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// LoadBalancing is how a router picks one ready replica of a shard.
	// +kubebuilder:default=Adaptive
	// +optional
	LoadBalancing LoadBalancing `json:"loadBalancing,omitempty"`

	// HedgeAfterPercentile (a pointer, so that 0 can be told from unset) sends a second request to another replica once a request has
	// taken longer than this percentile of recent latency; 0 turns hedging off.
	// +kubebuilder:default=95
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=99
	// +optional
	HedgeAfterPercentile *int32 `json:"hedgeAfterPercentile,omitempty"`

	// CacheEntries is the size of each router's result cache; 0 turns caching off (a
	// pointer, so that 0 can be told from unset).
	// +kubebuilder:default=10000
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000000
	// +optional
	CacheEntries *int32 `json:"cacheEntries,omitempty"`

	// Resources of the router container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
}

// AutoscalingSpec is the per-shard replica autoscaler: desired = ceil(current * observed /
// target), with a 10% tolerance, stabilization windows and [replicas.min, replicas.max].
// +kubebuilder:validation:XValidation:rule="self.target > 0",message="autoscaling.target must be greater than 0"
type AutoscalingSpec struct {
	// Enabled turns the autoscaler on; off, every shard runs replicas.min pods.
	// +kubebuilder:default=false
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// Metric is the per-replica signal compared with Target.
	// +kubebuilder:default=QPSPerReplica
	// +optional
	Metric AutoscalingMetric `json:"metric,omitempty"`

	// Target is the value of Metric per replica the autoscaler aims for: queries per
	// second, percent of the CPU request, or milliseconds of p99 latency.
	// +kubebuilder:default=200
	// +optional
	Target int32 `json:"target,omitempty"`

	// ScaleUpStabilizationSeconds is how long a higher recommendation must hold before
	// replicas are added; 0 scales up at once.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	ScaleUpStabilizationSeconds int32 `json:"scaleUpStabilizationSeconds,omitempty"`

	// ScaleDownStabilizationSeconds is how long load must stay low before replicas are
	// removed, so a short lull does not drop capacity. A pointer, so that 0 can be told
	// from unset.
	// +kubebuilder:default=300
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	ScaleDownStabilizationSeconds *int32 `json:"scaleDownStabilizationSeconds,omitempty"`
}

// RebalancingSpec is when and how fast slots move between shards.
type RebalancingSpec struct {
	// Enabled lets the operator move slots on its own when load drifts apart. A change of
	// spec.shards is carried out either way. A pointer, so that false can be told from unset.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// MaxLoadSkewPercent: slots move when the hottest shard's load exceeds the mean by this
	// many percent.
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MaxLoadSkewPercent int32 `json:"maxLoadSkewPercent,omitempty"`

	// MaxConcurrentMigrations bounds the slot moves in flight at once.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16
	// +optional
	MaxConcurrentMigrations int32 `json:"maxConcurrentMigrations,omitempty"`
}

// ShardStatus is what the operator observed of one shard.
type ShardStatus struct {
	// Shard is the shard's number, k in `<index>-shard-<k>`.
	Shard int32 `json:"shard"`
	// Replicas is the number of pods the shard should run now: replicas.min, or the
	// autoscaler's current decision, within [replicas.min, replicas.max].
	Replicas int32 `json:"replicas"`
	// ReadyReplicas is the number of the shard's pods that pass their readiness probe.
	ReadyReplicas int32 `json:"readyReplicas"`
	// DesiredReplicas is the count the shard moves toward: the autoscaler's decision
	// (replicas.min with autoscaling off). It differs from Replicas while a replica is
	// drained from the routers before the StatefulSet shrinks.
	// +optional
	DesiredReplicas int32 `json:"desiredReplicas,omitempty"`
	// ObservedMetric is the value of spec.autoscaling.metric the autoscaler last decided
	// on, rounded: queries per second per ready replica, percent of the CPU request, or
	// the worst p99 in milliseconds. Absent while no ready pod has a fresh load report.
	// +optional
	ObservedMetric *int64 `json:"observedMetric,omitempty"`
	// Slots is the number of hash slots the routing table gives this shard.
	Slots int32 `json:"slots"`
	// Vectors is the number of vectors the shard's primary holds (from its load report).
	// +optional
	Vectors int64 `json:"vectors,omitempty"`
	// QPS is the shard's queries per second summed over its replicas.
	// +optional
	QPS int64 `json:"qps,omitempty"`
	// P99Millis is the highest p99 search latency among the shard's replicas, in ms.
	// +optional
	P99Millis int64 `json:"p99Millis,omitempty"`
}

// MigrationStatus is one slot move, kept in status so an operator restart resumes it.
type MigrationStatus struct {
	// ID names the migration, unique within the index.
	ID string `json:"id"`
	// FromShard gives the slots away.
	FromShard int32 `json:"fromShard"`
	// ToShard receives them.
	ToShard int32 `json:"toShard"`
	// Slots is the moved slot set in the form "0-255,300".
	Slots string `json:"slots"`
	// Phase is the step the move is at.
	Phase MigrationPhase `json:"phase"`
	// Copied is the number of records copied to ToShard so far.
	// +optional
	Copied int64 `json:"copied,omitempty"`
	// Message says why a move failed or what it waits for.
	// +optional
	Message string `json:"message,omitempty"`
	// Reason is why the planner started the move: Reshard (spec.shards changed) or
	// Rebalance (load skew).
	// +optional
	Reason string `json:"reason,omitempty"`
	// Total estimates the records to copy: the source's vectors times the moved share of
	// its slots when the move started; 0 when the source's size was unknown.
	// +optional
	Total int64 `json:"total,omitempty"`
	// Bytes is the volume copied to ToShard so far.
	// +optional
	Bytes int64 `json:"bytes,omitempty"`
	// Lag is how many sequence numbers of the source's log the destination has not
	// applied yet; the handoff starts only when it is small.
	// +optional
	Lag int64 `json:"lag,omitempty"`
	// BytesPerSecond is the mean copy rate since the move started.
	// +optional
	BytesPerSecond int64 `json:"bytesPerSecond,omitempty"`
	// FreezeSeq is the source's sequence number after which the slots took no write: the
	// destination must have applied it before the routing table changes. 0 while the
	// slots are not frozen.
	// +optional
	FreezeSeq int64 `json:"freezeSeq,omitempty"`
	// FrozenAt is when the current freeze began; the write pause it causes is bounded.
	// +optional
	FrozenAt *metav1.Time `json:"frozenAt,omitempty"`
	// Epoch is the routing epoch at which ToShard owns the slots: set when the slots are
	// frozen (the table's epoch then, plus one).
	// +optional
	Epoch int64 `json:"epoch,omitempty"`
	// WritePauseMillis is how long the slots were frozen in the handoff that moved them:
	// from the freeze on the source to the routing table that gave them away.
	// +optional
	WritePauseMillis int64 `json:"writePauseMillis,omitempty"`
	// HandoffAttempts counts the freezes that ran out of time and were undone.
	// +optional
	HandoffAttempts int32 `json:"handoffAttempts,omitempty"`
	// ImportAttempts counts the copies the destination started for this move.
	// +optional
	ImportAttempts int32 `json:"importAttempts,omitempty"`
	// StartedAt is when the move was planned.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// FinishedAt is when the move became Done or Failed.
	// +optional
	FinishedAt *metav1.Time `json:"finishedAt,omitempty"`
}

// AnnIndexStatus is what the operator observed, written once per reconcile.
type AnnIndexStatus struct {
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// RoutingEpoch is the epoch of the routing table in `<index>-routing`.
	// +optional
	RoutingEpoch int64 `json:"routingEpoch,omitempty"`

	// PendingShards records a requested change of spec.shards that the migration executor
	// has not carried out yet; 0 when none is pending.
	// +optional
	PendingShards int32 `json:"pendingShards,omitempty"`

	// ReadyShards is the number of shards whose primary is ready. Like Vectors and QPS
	// it is always written, so the printer columns show 0 rather than nothing.
	// +optional
	ReadyShards int32 `json:"readyShards"`

	// Vectors is the number of vectors over all shards.
	// +optional
	Vectors int64 `json:"vectors"`

	// QPS is the queries per second over all shards.
	// +optional
	QPS int64 `json:"qps"`

	// Conditions are Available, Progressing, Degraded, Scaling and Migrating; see
	// annindex_conditions.go for their reasons.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Shards is the observed state of each shard.
	// +optional
	// +listType=map
	// +listMapKey=shard
	Shards []ShardStatus `json:"shards,omitempty"`

	// ActiveMigrations is the number of slot moves in flight (not Done or Failed).
	// +optional
	ActiveMigrations int32 `json:"activeMigrations"`

	// Migration sums up the moves in flight for `kubectl get`: the first one's phase and
	// progress ("CatchingUp 0->2 100% lag 12"), and how many more; empty when none.
	// +optional
	Migration string `json:"migration,omitempty"`

	// Migrations are the slot moves in flight or recently finished.
	// +optional
	// +listType=map
	// +listMapKey=id
	Migrations []MigrationStatus `json:"migrations,omitempty"`
}

// AnnIndex is one sharded, replicated HNSW vector index: the operator runs its shard
// servers and routers, scales hot shards and moves slots between shards.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:path=annindexes,singular=annindex,shortName=annidx,categories=annshard
// +kubebuilder:printcolumn:name="Shards",type=integer,JSONPath=`.spec.shards`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyShards`,description="Shards whose primary is ready"
// +kubebuilder:printcolumn:name="Vectors",type=integer,JSONPath=`.status.vectors`
// +kubebuilder:printcolumn:name="QPS",type=integer,JSONPath=`.status.qps`
// +kubebuilder:printcolumn:name="Epoch",type=integer,JSONPath=`.status.routingEpoch`,description="Routing table epoch"
// +kubebuilder:printcolumn:name="Moves",type=integer,JSONPath=`.status.activeMigrations`,description="Slot moves in flight"
// +kubebuilder:printcolumn:name="Migration",type=string,JSONPath=`.status.migration`,description="First move in flight: phase, shards, progress"
// +kubebuilder:printcolumn:name="Available",type=string,JSONPath=`.status.conditions[?(@.type=="Available")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AnnIndex struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired index.
	// +required
	Spec AnnIndexSpec `json:"spec"`
	// Status is what the operator observed.
	// +optional
	Status AnnIndexStatus `json:"status,omitempty"`
}

// AnnIndexList is a list of AnnIndex.
// +kubebuilder:object:root=true
type AnnIndexList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AnnIndex `json:"items"`
}

func init() {
	SchemeBuilder.Register(&AnnIndex{}, &AnnIndexList{})
}
