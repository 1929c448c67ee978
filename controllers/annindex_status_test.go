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

package controllers

import (
	"errors"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/slots"
)

// sts is a shard StatefulSet that wants `want` replicas and reports the given counts;
// rolled says whether it has observed and rolled out its generation.
func sts(want, have, ready int32, rolled bool) *appsv1.StatefulSet {
	s := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Generation: 2}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(want)}}
	s.Status = appsv1.StatefulSetStatus{ObservedGeneration: 2, Replicas: have, ReadyReplicas: ready, UpdatedReplicas: have,
		CurrentRevision: "a", UpdateRevision: "a"}
	if !rolled {
		s.Status.UpdateRevision = "b"
	}
	return s
}

func deploy(want, ready int32) *appsv1.Deployment {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Generation: 1}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To(want)}}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: want, UpdatedReplicas: want, ReadyReplicas: ready}
	return d
}

// healthyScope is a two-shard index whose shards and router are all ready.
func healthyScope() *scope {
	idx := testIndex()
	idx.Spec.Shards = 2
	idx.Spec.Replicas.Min = 2
	t := slots.Even(2)
	s := newScope(idx)
	s.table = &t
	for k := range int32(2) {
		s.shardSets[k] = sts(2, 2, 2, true)
		s.primaryReady[k] = true
	}
	s.router = deploy(2, 2)
	return s
}

func TestConditions(t *testing.T) {
	type want struct{ status, reason, message string }
	tests := []struct {
		name string
		edit func(*scope)
		cond func(*scope) metav1.Condition
		want want
	}{
		{"available", func(*scope) {}, availableCondition,
			want{"True", annv1alpha1.ReasonAvailable, "2 shards have a ready primary and 2 routers are ready"}},
		{"available unknown before the table is read", func(s *scope) { s.table = nil }, availableCondition,
			want{"Unknown", annv1alpha1.ReasonPending, "routing table not read yet"}},
		{"a shard without a ready primary", func(s *scope) { s.primaryReady[1] = false }, availableCondition,
			want{"False", annv1alpha1.ReasonShardUnavailable, "shard 1: primary products-shard-1-0 not ready"}},
		{"no ready router", func(s *scope) { s.router = deploy(2, 0) }, availableCondition,
			want{"False", annv1alpha1.ReasonRouterUnavailable, "router: 0/2 replicas ready"}},
		{"not degraded", func(*scope) {}, degradedCondition,
			want{"False", annv1alpha1.ReasonAsExpected, "every shard and the router have all their replicas ready"}},
		{"a shard below its replicas", func(s *scope) { s.shardSets[1] = sts(2, 2, 1, true) }, degradedCondition,
			want{"True", annv1alpha1.ReasonReplicasUnready, "shard 1: 1/2 replicas ready"}},
		{"routers below their replicas", func(s *scope) { s.router = deploy(2, 1) }, degradedCondition,
			want{"True", annv1alpha1.ReasonRouterReplicasUnready, "router: 1/2 replicas ready"}},
		{"a failed phase", func(s *scope) { s.err = errors.New("applying StatefulSet x: boom") }, degradedCondition,
			want{"True", annv1alpha1.ReasonReconcileFailed, "applying StatefulSet x: boom"}},
		{"settled", func(*scope) {}, progressingCondition,
			want{"False", annv1alpha1.ReasonReconciled, "every shard and the router run the current spec"}},
		{"a shard rolling", func(s *scope) { s.shardSets[0] = sts(2, 2, 2, false) }, progressingCondition,
			want{"True", annv1alpha1.ReasonRollingUpdate, "shard 0: 2/2 replicas updated"}},
		{"a generation not yet observed", func(s *scope) { s.shardSets[1].Generation = 3 }, progressingCondition,
			want{"True", annv1alpha1.ReasonRollingUpdate, "shard 1: rollout of generation 3 not yet observed"}},
		{"a shard scaling", func(s *scope) { s.shardSets[1] = sts(3, 2, 2, true); s.shardSets[1].Status.UpdatedReplicas = 3 }, progressingCondition,
			want{"True", annv1alpha1.ReasonScalingReplicas, "shard 1: 2 -> 3 replicas"}},
		{"a reshard pending", func(s *scope) { s.index.Spec.Shards = 3; s.index.Status.PendingShards = 3 }, progressingCondition,
			want{"True", annv1alpha1.ReasonReshardPending, "spec.shards is 3 but the routing table has 2 shards: reshard pending"}},
		{"scaling up", func(s *scope) { s.shardSets[0] = sts(3, 2, 2, true) }, scalingCondition,
			want{"True", annv1alpha1.ReasonScalingUp, "shard 0: 2 -> 3 replicas, autoscaling is off: replicas.min is 2"}},
		{"scaling down", func(s *scope) { s.shardSets[1] = sts(1, 2, 2, true) }, scalingCondition,
			want{"True", annv1alpha1.ReasonScalingDown, "shard 1: 2 -> 1 replicas, autoscaling is off: replicas.min is 2"}},
		{"autoscaling off", func(*scope) {}, scalingCondition,
			want{"False", annv1alpha1.ReasonAutoscalingDisabled, "autoscaling is off: every shard runs replicas.min (2)"}},
		{"autoscaling on and stable", func(s *scope) { s.index.Spec.Autoscaling.Enabled = true }, scalingCondition,
			want{"False", annv1alpha1.ReasonStable, "every shard runs its desired replicas"}},
		{"scaling up on load", func(s *scope) {
			autoscaled(s, 1, scaleDecision{Current: 2, Desired: 3, Recommendation: 3, Observed: 212, Known: true})
			s.shardSets[1] = sts(3, 2, 2, true)
		}, scalingCondition,
			want{"True", annv1alpha1.ReasonScalingUp, "shard 1: 2 -> 3 replicas, 212 QPS/replica > target 40"}},
		{"a new replica not ready yet", func(s *scope) {
			autoscaled(s, 1, scaleDecision{Current: 3, Desired: 3, Recommendation: 3, Observed: 150, Known: true})
			s.shardSets[1] = sts(3, 3, 2, true)
			s.grown[1] = true
		}, scalingCondition,
			want{"True", annv1alpha1.ReasonScalingUp, "shard 1: 2/3 replicas ready, 150 QPS/replica > target 40"}},
		{"a replica that fails is not scaling", func(s *scope) {
			autoscaled(s, 1, scaleDecision{Current: 3, Desired: 3, Recommendation: 3, Observed: 30, Known: true})
			s.shardSets[1] = sts(3, 3, 2, true)
		}, scalingCondition,
			want{"False", annv1alpha1.ReasonStable, "every shard runs its desired replicas"}},
		{"a new replica not ready yet keeps Progressing", func(s *scope) { s.shardSets[1] = sts(3, 3, 2, true) }, progressingCondition,
			want{"True", annv1alpha1.ReasonScalingReplicas, "shard 1: 2/3 replicas ready"}},
		{"draining before a scale-down", func(s *scope) {
			autoscaled(s, 0, scaleDecision{Current: 2, Desired: 1, Recommendation: 1, Observed: 3, Known: true})
			s.draining[0] = "draining products-shard-0-1: router r-a: still routes to products-shard-0-1"
		}, scalingCondition,
			want{"True", annv1alpha1.ReasonScalingDown,
				"shard 0: 2 -> 1 replicas, 3 QPS/replica < target 40; draining products-shard-0-1: router r-a: still routes to products-shard-0-1"}},
		{"held by an invariant", func(s *scope) {
			autoscaled(s, 0, scaleDecision{Current: 2, Desired: 2, Recommendation: 1, Observed: 3, Known: true, Held: &ruleNotWhileMigrating})
		}, scalingCondition,
			want{"False", annv1alpha1.ReasonStable, "every shard runs its desired replicas; shard 0 stays at 2 replicas, not 1 (NotWhileMigrating)"}},
		{"no load report", func(s *scope) {
			autoscaled(s, 0, scaleDecision{Current: 2, Desired: 2, Recommendation: 2, Held: &ruleNoData})
			s.shardSets[0] = sts(2, 2, 1, true)
			s.grown[0] = true
		}, scalingCondition,
			want{"True", annv1alpha1.ReasonScalingUp, "shard 0: 1/2 replicas ready, no ready pod has a fresh load report"}},
		{"no migration", func(*scope) {}, migratingCondition,
			want{"False", annv1alpha1.ReasonNoMigration, "no slots are moving"}},
		{"a migration in flight", func(s *scope) {
			s.index.Status.Migrations = []annv1alpha1.MigrationStatus{
				{ID: "m-6", Phase: annv1alpha1.MigrationDone},
				{ID: "m-7", FromShard: 0, ToShard: 1, Slots: "0-255", Phase: annv1alpha1.MigrationCatchingUp},
			}
		}, migratingCondition,
			want{"True", annv1alpha1.ReasonMigrationInProgress, "m-7: shard 0 -> 1, slots 0-255, CatchingUp"}},
		{"a failed migration", func(s *scope) {
			s.index.Status.Migrations = []annv1alpha1.MigrationStatus{{ID: "m-8", FromShard: 1, ToShard: 0, Slots: "7", Phase: annv1alpha1.MigrationFailed, Message: "target gone"}}
		}, migratingCondition,
			want{"False", annv1alpha1.ReasonMigrationFailed, "m-8: shard 1 -> 0, slots 7, Failed: target gone"}},
		{"a reshard pending, not started", func(s *scope) { s.index.Spec.Shards = 4; s.index.Status.PendingShards = 4 }, migratingCondition,
			want{"Unknown", annv1alpha1.ReasonReshardPending, "spec.shards is 4 but the routing table has 2 shards: reshard pending"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := healthyScope()
			tt.edit(s)
			c := tt.cond(s)
			got := want{string(c.Status), c.Reason, c.Message}
			if got != tt.want {
				t.Fatalf("condition = %+v\nwant        %+v", got, tt.want)
			}
		})
	}
}

// autoscaled turns autoscaling on (QPSPerReplica, target 40) and records a decision for
// shard k.
func autoscaled(s *scope, k int32, d scaleDecision) {
	s.index.Spec.Autoscaling = annv1alpha1.AutoscalingSpec{Enabled: true, Metric: annv1alpha1.AutoscalingQPSPerReplica, Target: 40}
	s.scale[k], s.replicas[k] = d, d.Desired
}

func TestCulpritsBounded(t *testing.T) {
	got := culprits([]string{"a", "b", "c", "d", "e"})
	if want := "a; b; c; and 2 more"; got != want {
		t.Fatalf("culprits = %q, want %q", got, want)
	}
}

func TestSetStatus(t *testing.T) {
	s := healthyScope()
	s.index.Spec.Shards = 3 // recorded, not yet carried out
	s.index.Status.Shards = []annv1alpha1.ShardStatus{{Shard: 1, Vectors: 500, QPS: 40, P99Millis: 3}}
	setStatus(s)
	st := s.index.Status
	if st.PendingShards != 3 || st.RoutingEpoch != 1 || st.ReadyShards != 2 {
		t.Fatalf("counters: pending %d epoch %d ready %d", st.PendingShards, st.RoutingEpoch, st.ReadyShards)
	}
	wantShards := []annv1alpha1.ShardStatus{
		{Shard: 0, Replicas: 2, ReadyReplicas: 2, DesiredReplicas: 2, Slots: 2048},
		{Shard: 1, Replicas: 2, ReadyReplicas: 2, DesiredReplicas: 2, Slots: 2048, Vectors: 500, QPS: 40, P99Millis: 3},
	}
	if len(st.Shards) != 2 || st.Shards[0] != wantShards[0] || st.Shards[1] != wantShards[1] {
		t.Fatalf("shards = %+v, want %+v (load figures carried over)", st.Shards, wantShards)
	}
	if st.Vectors != 500 || st.QPS != 40 {
		t.Fatalf("totals: vectors %d qps %d", st.Vectors, st.QPS)
	}
	for _, ct := range []string{annv1alpha1.ConditionAvailable, annv1alpha1.ConditionProgressing, annv1alpha1.ConditionDegraded,
		annv1alpha1.ConditionScaling, annv1alpha1.ConditionMigrating} {
		c := meta.FindStatusCondition(st.Conditions, ct)
		if c == nil {
			t.Fatalf("condition %s missing", ct)
		}
		if c.ObservedGeneration != s.index.Generation {
			t.Fatalf("condition %s observedGeneration %d", ct, c.ObservedGeneration)
		}
	}
	if c := meta.FindStatusCondition(st.Conditions, annv1alpha1.ConditionMigrating); c.Reason != annv1alpha1.ReasonReshardPending {
		t.Fatalf("Migrating reason %s, want ReshardPending", c.Reason)
	}

	// Pure: the same facts give the same status, transition times included.
	before := s.index.Status.DeepCopy()
	setStatus(s)
	if !equality.Semantic.DeepEqual(before, &s.index.Status) {
		t.Fatalf("setStatus is not idempotent:\n%+v\nthen\n%+v", before, &s.index.Status)
	}
}
