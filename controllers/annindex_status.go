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
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
)

// maxCulprits bounds how many objects a condition message names.
const maxCulprits = 3

// setStatus derives the whole status from the facts in the scope: the counters, then
// one condition per function, Available last because it sums up the others' facts. It
// is pure, so the same facts always give the same status and an unchanged cluster is not
// rewritten.
func setStatus(s *scope) {
	st := &s.index.Status
	if s.table != nil {
		st.RoutingEpoch = int64(s.table.Epoch)
		st.PendingShards = 0
		if int(s.index.Spec.Shards) != s.table.Shards {
			st.PendingShards = s.index.Spec.Shards
		}
	}
	st.ActiveMigrations, st.Migration = migrationSummary(st.Migrations)
	st.Shards = shardStatuses(s)
	st.ReadyShards, st.Vectors, st.QPS = 0, 0, 0
	for _, sh := range st.Shards {
		if s.primaryReady[sh.Shard] {
			st.ReadyShards++
		}
		st.Vectors += sh.Vectors
		st.QPS += sh.QPS
	}
	gen := s.index.Generation
	for _, c := range []metav1.Condition{
		progressingCondition(s),
		degradedCondition(s),
		scalingCondition(s),
		migratingCondition(s),
		availableCondition(s),
	} {
		c.ObservedGeneration = gen
		meta.SetStatusCondition(&st.Conditions, c)
	}
}

// shardStatuses lists every observed shard StatefulSet in shard order. Load figures
// (vectors, qps, p99) come from the load collector; without one they are carried over.
func shardStatuses(s *scope) []annv1alpha1.ShardStatus {
	if len(s.shardSets) == 0 && s.table == nil {
		return s.index.Status.Shards // nothing observed: keep what was reported
	}
	prev := map[int32]annv1alpha1.ShardStatus{}
	for _, sh := range s.index.Status.Shards {
		prev[sh.Shard] = sh
	}
	var out []annv1alpha1.ShardStatus
	for _, k := range sortedShards(s) {
		sts := s.shardSets[k]
		sh := prev[k]
		sh.Shard = k
		sh.Replicas = ptr.Deref(sts.Spec.Replicas, 1)
		sh.ReadyReplicas = sts.Status.ReadyReplicas
		sh.DesiredReplicas = sh.Replicas
		if n, ok := s.replicas[k]; ok {
			sh.DesiredReplicas = n
		}
		sh.ObservedMetric = nil
		if d, ok := s.scale[k]; ok && d.Known {
			sh.ObservedMetric = ptr.To(int64(math.Round(d.Observed)))
		}
		if s.loadKnown {
			l := s.load[k]
			sh.Vectors, sh.QPS, sh.P99Millis = l.Vectors, l.QPS, l.P99Millis
		}
		sh.Slots = 0
		if s.table != nil {
			set := s.table.SlotsOf(int(k))
			sh.Slots = int32(set.Len())
		}
		out = append(out, sh)
	}
	return out
}

func sortedShards(s *scope) []int32 {
	ks := make([]int32, 0, len(s.shardSets))
	for k := range s.shardSets {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// culprits joins up to maxCulprits messages, saying how many more there were.
func culprits(msgs []string) string {
	if len(msgs) <= maxCulprits {
		return strings.Join(msgs, "; ")
	}
	return fmt.Sprintf("%s; and %d more", strings.Join(msgs[:maxCulprits], "; "), len(msgs)-maxCulprits)
}

func condition(t string, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg}
}

// stsRolling says whether a StatefulSet has not finished rolling out its current spec.
func stsRolling(sts *appsv1.StatefulSet) (string, bool) {
	want := ptr.Deref(sts.Spec.Replicas, 1)
	switch {
	case sts.Status.ObservedGeneration < sts.Generation:
		return "rollout of generation " + fmt.Sprint(sts.Generation) + " not yet observed", true
	case sts.Status.UpdateRevision != "" && sts.Status.CurrentRevision != sts.Status.UpdateRevision,
		sts.Status.UpdatedReplicas < want:
		return fmt.Sprintf("%d/%d replicas updated", sts.Status.UpdatedReplicas, want), true
	}
	return "", false
}

// stsScaling says whether shard k's StatefulSet runs fewer (dir > 0) or more (dir < 0)
// pods than it wants; msg gives both counts.
func stsScaling(k int32, sts *appsv1.StatefulSet) (msg string, dir int) {
	want, have := ptr.Deref(sts.Spec.Replicas, 1), sts.Status.Replicas
	if have == want {
		return "", 0
	}
	return fmt.Sprintf("shard %d: %d -> %d replicas", k, have, want), cmp.Compare(want, have)
}

func deployRolling(d *appsv1.Deployment) (string, bool) {
	want := ptr.Deref(d.Spec.Replicas, 1)
	switch {
	case d.Status.ObservedGeneration < d.Generation:
		return "rollout of generation " + fmt.Sprint(d.Generation) + " not yet observed", true
	case d.Status.UpdatedReplicas < want:
		return fmt.Sprintf("%d/%d replicas updated", d.Status.UpdatedReplicas, want), true
	case d.Status.Replicas > d.Status.UpdatedReplicas:
		return fmt.Sprintf("%d old replicas still running", d.Status.Replicas-d.Status.UpdatedReplicas), true
	}
	return "", false
}

// progressingCondition: True while a shard or the router rolls out or scales, or while a
// reshard is recorded; rolling outranks scaling, which outranks a pending reshard.
func progressingCondition(s *scope) metav1.Condition {
	var rolling, scaling []string
	for _, k := range sortedShards(s) {
		sts := s.shardSets[k]
		if msg, ok := stsRolling(sts); ok {
			rolling = append(rolling, fmt.Sprintf("shard %d: %s", k, msg))
		}
		if msg, dir := stsScaling(k, sts); dir != 0 {
			scaling = append(scaling, msg)
		} else if want := ptr.Deref(sts.Spec.Replicas, 1); sts.Status.ReadyReplicas < want {
			scaling = append(scaling, fmt.Sprintf("shard %d: %d/%d replicas ready", k, sts.Status.ReadyReplicas, want))
		}
	}
	if d := s.router; d != nil {
		if msg, ok := deployRolling(d); ok {
			rolling = append(rolling, "router: "+msg)
		}
	}
	switch {
	case len(rolling) > 0:
		return condition(annv1alpha1.ConditionProgressing, metav1.ConditionTrue, annv1alpha1.ReasonRollingUpdate, culprits(rolling))
	case len(scaling) > 0:
		return condition(annv1alpha1.ConditionProgressing, metav1.ConditionTrue, annv1alpha1.ReasonScalingReplicas, culprits(scaling))
	case s.index.Status.PendingShards != 0:
		return condition(annv1alpha1.ConditionProgressing, metav1.ConditionTrue, annv1alpha1.ReasonReshardPending, reshardMessage(s))
	case s.table == nil || s.router == nil:
		return condition(annv1alpha1.ConditionProgressing, metav1.ConditionUnknown, annv1alpha1.ReasonPending, "objects not all applied yet")
	}
	return condition(annv1alpha1.ConditionProgressing, metav1.ConditionFalse, annv1alpha1.ReasonReconciled, "every shard and the router run the current spec")
}

func reshardMessage(s *scope) string {
	return fmt.Sprintf("spec.shards is %d but the routing table has %d shards: reshard pending", s.index.Spec.Shards, s.table.Shards)
}

// degradedCondition: True when the operator failed, or a shard or the router has fewer
// ready replicas than it should run.
func degradedCondition(s *scope) metav1.Condition {
	if s.err != nil {
		return condition(annv1alpha1.ConditionDegraded, metav1.ConditionTrue, annv1alpha1.ReasonReconcileFailed, s.err.Error())
	}
	var short []string
	for _, k := range sortedShards(s) {
		sts := s.shardSets[k]
		want, ready := ptr.Deref(sts.Spec.Replicas, 1), sts.Status.ReadyReplicas
		if ready < want {
			short = append(short, fmt.Sprintf("shard %d: %d/%d replicas ready", k, ready, want))
		}
	}
	if len(short) > 0 {
		return condition(annv1alpha1.ConditionDegraded, metav1.ConditionTrue, annv1alpha1.ReasonReplicasUnready, culprits(short))
	}
	if d := s.router; d != nil {
		if want := ptr.Deref(d.Spec.Replicas, 1); d.Status.ReadyReplicas < want {
			return condition(annv1alpha1.ConditionDegraded, metav1.ConditionTrue, annv1alpha1.ReasonRouterReplicasUnready,
				fmt.Sprintf("router: %d/%d replicas ready", d.Status.ReadyReplicas, want))
		}
	}
	if s.table == nil || s.router == nil {
		return condition(annv1alpha1.ConditionDegraded, metav1.ConditionUnknown, annv1alpha1.ReasonPending, "objects not all applied yet")
	}
	return condition(annv1alpha1.ConditionDegraded, metav1.ConditionFalse, annv1alpha1.ReasonAsExpected, "every shard and the router have all their replicas ready")
}

// scalingCondition: True while a shard moves toward the replica count decided for it
// (a replica drained, created, deleted, or, after the autoscaler grew the shard, not
// ready yet; a pod that fails later is Degraded's business), with a message that names the
// shard, the counts, and the metric against its target; False when every shard runs its
// decided count, naming a shard an invariant or window holds back.
func scalingCondition(s *scope) metav1.Condition {
	var up, down, held []string
	for _, k := range sortedShards(s) {
		sts := s.shardSets[k]
		want, ok := s.replicas[k]
		if !ok {
			want = ptr.Deref(sts.Spec.Replicas, 1)
		}
		have := sts.Status.Replicas
		spec := ptr.Deref(sts.Spec.Replicas, 1)
		msg := fmt.Sprintf("shard %d: %d -> %d replicas, %s", k, have, want, scaleWhy(s, k))
		if have == spec && spec == want {
			msg = fmt.Sprintf("shard %d: %d/%d replicas ready, %s", k, sts.Status.ReadyReplicas, want, scaleWhy(s, k))
		}
		if d := s.draining[k]; d != "" {
			msg += "; " + d
		}
		switch {
		case want > have || (want == have && spec > have) || (s.grown[k] && want == spec && spec == have && sts.Status.ReadyReplicas < want):
			up = append(up, msg)
		case want < have || spec < have:
			down = append(down, msg)
		}
		if d, ok := s.scale[k]; ok && d.Held != nil && d.Recommendation != d.Desired {
			held = append(held, fmt.Sprintf("shard %d stays at %d replicas, not %d (%s)", k, d.Desired, d.Recommendation, d.Held.Name))
		}
	}
	switch {
	case len(up) > 0:
		return condition(annv1alpha1.ConditionScaling, metav1.ConditionTrue, annv1alpha1.ReasonScalingUp, culprits(append(up, down...)))
	case len(down) > 0:
		return condition(annv1alpha1.ConditionScaling, metav1.ConditionTrue, annv1alpha1.ReasonScalingDown, culprits(down))
	case !s.index.Spec.Autoscaling.Enabled:
		return condition(annv1alpha1.ConditionScaling, metav1.ConditionFalse, annv1alpha1.ReasonAutoscalingDisabled,
			fmt.Sprintf("autoscaling is off: every shard runs replicas.min (%d)", s.index.Spec.Replicas.Min))
	case len(held) > 0:
		return condition(annv1alpha1.ConditionScaling, metav1.ConditionFalse, annv1alpha1.ReasonStable,
			"every shard runs its desired replicas; "+culprits(held))
	}
	return condition(annv1alpha1.ConditionScaling, metav1.ConditionFalse, annv1alpha1.ReasonStable, "every shard runs its desired replicas")
}

// migratingCondition: True while a slot migration is in flight, Unknown while a reshard
// is recorded but no migration has started, False otherwise (MigrationFailed names a
// failed move).
func migratingCondition(s *scope) metav1.Condition {
	var active, failed []string
	for _, m := range s.index.Status.Migrations {
		desc := fmt.Sprintf("%s: shard %d -> %d, slots %s, %s", m.ID, m.FromShard, m.ToShard, m.Slots, m.Phase)
		switch m.Phase {
		case annv1alpha1.MigrationDone:
		case annv1alpha1.MigrationFailed:
			if m.Message != "" {
				desc += ": " + m.Message
			}
			failed = append(failed, desc)
		default:
			active = append(active, desc)
		}
	}
	switch {
	case len(active) > 0:
		return condition(annv1alpha1.ConditionMigrating, metav1.ConditionTrue, annv1alpha1.ReasonMigrationInProgress, culprits(active))
	case s.index.Status.PendingShards != 0:
		return condition(annv1alpha1.ConditionMigrating, metav1.ConditionUnknown, annv1alpha1.ReasonReshardPending, reshardMessage(s))
	case len(failed) > 0:
		return condition(annv1alpha1.ConditionMigrating, metav1.ConditionFalse, annv1alpha1.ReasonMigrationFailed, culprits(failed))
	}
	return condition(annv1alpha1.ConditionMigrating, metav1.ConditionFalse, annv1alpha1.ReasonNoMigration, "no slots are moving")
}

// availableCondition: True when every shard of the routing table has a ready primary
// and at least one router is ready.
func availableCondition(s *scope) metav1.Condition {
	if s.table == nil {
		return condition(annv1alpha1.ConditionAvailable, metav1.ConditionUnknown, annv1alpha1.ReasonPending, "routing table not read yet")
	}
	var down []string
	for k := int32(0); k < int32(s.table.Shards); k++ {
		if !s.primaryReady[k] {
			down = append(down, fmt.Sprintf("shard %d: primary %s-0 not ready", k, shardName(s.index, k)))
		}
	}
	if len(down) > 0 {
		return condition(annv1alpha1.ConditionAvailable, metav1.ConditionFalse, annv1alpha1.ReasonShardUnavailable, culprits(down))
	}
	if s.router == nil {
		return condition(annv1alpha1.ConditionAvailable, metav1.ConditionUnknown, annv1alpha1.ReasonPending, "router not applied yet")
	}
	if s.router.Status.ReadyReplicas == 0 {
		return condition(annv1alpha1.ConditionAvailable, metav1.ConditionFalse, annv1alpha1.ReasonRouterUnavailable,
			fmt.Sprintf("router: 0/%d replicas ready", ptr.Deref(s.router.Spec.Replicas, 1)))
	}
	return condition(annv1alpha1.ConditionAvailable, metav1.ConditionTrue, annv1alpha1.ReasonAvailable,
		fmt.Sprintf("%d shards have a ready primary and %d routers are ready", s.table.Shards, s.router.Status.ReadyReplicas))
}
