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
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/slots"
)

const (
	// removedShardPoll is how often the removal of an emptied shard is looked at again.
	removedShardPoll = 2 * time.Second
	// rebalanceEvery is how often, at least, the planner looks at the load of an index
	// with rebalancing on (plus up to a quarter more, at random).
	rebalanceEvery = 20 * time.Second
)

// servedShards is how many shard StatefulSets run: every shard of the routing table and,
// while a reshard grows the index, the new ones spec.shards asks for (they must be up
// before slots move to them). Shards past both stay until they are removed
// (removeEmptiedShards).
func servedShards(s *scope) int32 {
	return max(int32(s.table.Shards), s.index.Spec.Shards)
}

// migrationBlocked says why no move may start now: a shard rolling out or short of ready
// replicas. Empty when moves may start.
func migrationBlocked(s *scope) string {
	for _, k := range sortedShards(s) {
		sts := s.shardSets[k]
		if msg, rolling := stsRolling(sts); rolling {
			return fmt.Sprintf("shard %d rolls out: %s", k, msg)
		}
		if want := ptr.Deref(sts.Spec.Replicas, 1); sts.Status.ReadyReplicas < want {
			return fmt.Sprintf("shard %d: %d/%d replicas ready", k, sts.Status.ReadyReplicas, want)
		}
	}
	return ""
}

// decideMigrations runs the planner on the observed table, shards and load and adds the
// moves it plans to status.migrations as Pending; the executor starts them.
//
// The moves in status are the executor's memory, so they are taken from the API server,
// not the cache: a cache that lags one status write behind would plan a move twice, or
// drop a move in flight from status when the status is written back.
func (r *AnnIndexReconciler) decideMigrations(ctx context.Context, s *scope) (ctrl.Result, error) {
	fresh := &annv1alpha1.AnnIndex{}
	if err := r.apiReader().Get(ctx, client.ObjectKeyFromObject(s.index), fresh); err != nil {
		return ctrl.Result{}, fmt.Errorf("reading AnnIndex %s for its migrations: %w", s.index.Name, err)
	}
	s.index.Status.Migrations = fresh.Status.Migrations
	lo, hi := replicaBounds(s.index)
	in := planInput{
		Table:       *s.table,
		Shards:      s.index.Spec.Shards,
		Ready:       s.primaryReady,
		Blocked:     migrationBlocked(s),
		Migrations:  s.index.Status.Migrations,
		Rebalancing: s.index.Spec.Rebalancing,
		ReplicaRoom: map[int32]bool{},
		Now:         time.Now(),
	}
	if r.Load != nil {
		in.Load = r.Load.SlotLoad(client.ObjectKeyFromObject(s.index), in.Now)
	}
	if s.index.Spec.Autoscaling.Enabled {
		for k, sts := range s.shardSets {
			in.ReplicaRoom[k] = max(runningReplicas(s.index, sts), lo) < hi
		}
	}
	plan := planMigrations(in)
	for i, mv := range plan.Moves {
		m := annv1alpha1.MigrationStatus{
			ID:        fmt.Sprintf("m%d-%dto%d-%d", in.Now.Unix(), mv.From, mv.To, i),
			FromShard: mv.From,
			ToShard:   mv.To,
			Slots:     mv.Slots.String(),
			Phase:     annv1alpha1.MigrationPending,
			Reason:    mv.Reason,
			StartedAt: ptrTime(in.Now),
			Message:   "planned",
		}
		s.index.Status.Migrations = append(s.index.Status.Migrations, m)
		log.FromContext(ctx).Info("Planned a slot move", "migration", m.ID, "from", mv.From, "to", mv.To, "slots", m.Slots, "reason", mv.Reason)
	}
	s.shrinkTable = plan.Shrink
	if plan.Waiting != "" {
		log.FromContext(ctx).V(1).Info("No new slot move", "why", plan.Waiting)
	}
	if ptr.Deref(s.index.Spec.Rebalancing.Enabled, true) && r.Load != nil {
		// Skew is a trend over several load intervals: look again even if nothing
		// else calls, with jitter so that many indexes do not plan in step.
		return ctrl.Result{RequeueAfter: rebalanceEvery + time.Duration(rand.Int64N(int64(rebalanceEvery/4)))}, nil
	}
	return ctrl.Result{}, nil
}

// applyMigrationStep advances every move by one idempotent step (see migrationEnv), then
// shrinks the table once the removed shards are empty and removes their StatefulSets once
// every router routes by a table without them.
func (r *AnnIndexReconciler) applyMigrationStep(ctx context.Context, s *scope) (ctrl.Result, error) {
	env := r.migrationEnv(s)
	wait, err := env.runMigrations(ctx, s.index.Status.Migrations, migrationBlocked(s), int(max(s.index.Spec.Rebalancing.MaxConcurrentMigrations, 1)))
	s.index.Status.Migrations = pruneMigrations(s.index.Status.Migrations)
	if err != nil {
		return ctrl.Result{RequeueAfter: wait}, err
	}
	res := ctrl.Result{RequeueAfter: wait}
	if s.shrinkTable {
		if err := r.shrinkTable(ctx, s, env); err != nil {
			return res, err
		}
	}
	got, err := r.removeEmptiedShards(ctx, s, env)
	return lowestNonZeroResult(res, got), err
}

// migrationEnv binds the executor to this reconciler and index.
func (r *AnnIndexReconciler) migrationEnv(s *scope) *migrationEnv {
	idx := s.index
	return &migrationEnv{
		now:   time.Now,
		sleep: sleepCtx,
		shard: func(ctx context.Context, k int32) (shardPrimary, error) {
			return r.dialShardPrimary(ctx, idx, k)
		},
		readTable: func(ctx context.Context) (slots.Table, string, error) {
			t, cm, err := r.readRoutingTable(ctx, idx)
			if err != nil {
				return slots.Table{}, "", err
			}
			*s.table = t
			return t, cm.ResourceVersion, nil
		},
		writeTable: func(ctx context.Context, t slots.Table, version string) error {
			if err := r.writeRoutingTable(ctx, idx, t, version); err != nil {
				return err
			}
			*s.table = t
			return nil
		},
		routersAt: func(ctx context.Context, e uint64) (bool, []string, error) {
			return r.routersAll(ctx, idx, epochAdopted(e))
		},
		vectors: func(k int32) int64 { return s.load[k].Vectors },
		replicaLag: func(k int32) uint64 {
			lag, _ := r.Load.ReplicaLag(client.ObjectKeyFromObject(idx), k, time.Now())
			return lag
		},
		event: func(warning bool, reason, msg string) {
			if r.Recorder == nil {
				return
			}
			kind := corev1.EventTypeNormal
			if warning {
				kind = corev1.EventTypeWarning
			}
			r.Recorder.Eventf(idx, nil, kind, reason, "Migrate", "%s", msg)
		},
	}
}

// readRoutingTable reads the routing ConfigMap from the API server (never the cache: the
// table is written from what is read here) and parses its table.
func (r *AnnIndexReconciler) readRoutingTable(ctx context.Context, idx *annv1alpha1.AnnIndex) (slots.Table, *corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{}
	if err := r.apiReader().Get(ctx, client.ObjectKey{Namespace: idx.Namespace, Name: routingName(idx)}, cm); err != nil {
		return slots.Table{}, nil, fmt.Errorf("reading routing ConfigMap %s: %w", routingName(idx), err)
	}
	t, err := slots.Parse([]byte(cm.Data[slots.ConfigMapKey]))
	if err != nil {
		return slots.Table{}, nil, fmt.Errorf("reading routing table %s/%s: %w", cm.Name, slots.ConfigMapKey, err)
	}
	return t, cm, nil
}

// writeRoutingTable replaces the table in the routing ConfigMap if the ConfigMap is still
// at version: the merge patch carries it (optimistic lock), so the API server refuses a
// write over a change made since (errTableConflict). It is one request, with no read
// before it: the handoff writes the table while the source's writes are paused.
func (r *AnnIndexReconciler) writeRoutingTable(ctx context.Context, idx *annv1alpha1.AnnIndex, t slots.Table, version string) error {
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encoding routing table: %w", err)
	}
	base := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: idx.Namespace, Name: routingName(idx), ResourceVersion: version}}
	cm := base.DeepCopy()
	cm.Data = map[string]string{slots.ConfigMapKey: string(b)}
	if err := r.Patch(ctx, cm, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsConflict(err) {
			return errTableConflict
		}
		return fmt.Errorf("writing routing ConfigMap %s: %w", cm.Name, err)
	}
	log.FromContext(ctx).Info("Wrote routing table", "epoch", t.Epoch, "shards", t.Shards)
	return nil
}

// shrinkTable writes the table without the shards past spec.shards, which own nothing:
// the routers stop asking them, and once every router routes by it the shards are removed.
func (r *AnnIndexReconciler) shrinkTable(ctx context.Context, s *scope, env *migrationEnv) error {
	t, version, err := env.readTable(ctx)
	if err != nil {
		return err
	}
	n := int(s.index.Spec.Shards)
	if t.Shards <= n {
		return nil
	}
	for _, o := range t.Owners {
		if int(o) >= n {
			return nil // a move put slots back: plan again
		}
	}
	t.Shards = n
	t.Epoch++
	if err := env.writeTable(ctx, t, version); err != nil && err != errTableConflict {
		return err
	}
	return nil
}

// removeEmptiedShards deletes the StatefulSet, Service and PodDisruptionBudget of every
// shard past both the table and spec.shards, once it owns nothing at a confirmed epoch:
// every router routes by the current table (which has no such shard) and the shard's
// primary, asked, owns no slot.
func (r *AnnIndexReconciler) removeEmptiedShards(ctx context.Context, s *scope, env *migrationEnv) (ctrl.Result, error) {
	var gone []int32
	for _, k := range sortedShards(s) {
		if k >= int32(s.table.Shards) && k >= s.index.Spec.Shards {
			gone = append(gone, k)
		}
	}
	if len(gone) == 0 {
		return ctrl.Result{}, nil
	}
	logger := log.FromContext(ctx)
	ok, not, err := env.routersAt(ctx, s.table.Epoch)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !ok {
		logger.V(1).Info("Emptied shards wait for the routers", "epoch", s.table.Epoch, "routers", not)
		return ctrl.Result{RequeueAfter: removedShardPoll}, nil
	}
	for _, k := range gone {
		if len(s.shardPods[k]) > 0 {
			p, err := env.shard(ctx, k)
			if err != nil {
				logger.V(1).Info("Emptied shard not reachable to confirm it owns nothing", "shard", k, "error", err.Error())
				return ctrl.Result{RequeueAfter: removedShardPoll}, nil
			}
			st, err := p.Slots(ctx)
			if err != nil {
				return ctrl.Result{RequeueAfter: removedShardPoll}, nil
			}
			if empty, err := ownsNoSlot(st); !empty {
				logger.Info("Shard past spec.shards still owns slots", "shard", k, "slots", st.Owned, "epoch", st.Epoch, "error", err)
				return ctrl.Result{RequeueAfter: removedShardPoll}, nil
			}
		}
		meta := metav1.ObjectMeta{Name: shardName(s.index, k), Namespace: s.index.Namespace}
		for _, obj := range []client.Object{&appsv1.StatefulSet{ObjectMeta: meta}, &corev1.Service{ObjectMeta: meta}, &policyv1.PodDisruptionBudget{ObjectMeta: meta}} {
			if err := r.Delete(ctx, obj, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, fmt.Errorf("removing emptied shard %d: %w", k, err)
			}
		}
		delete(s.shardSets, k)
		logger.Info("Removed emptied shard", "shard", k, "epoch", s.table.Epoch)
		env.event(false, "ShardRemoved", fmt.Sprintf("shard %d owns no slot at epoch %d and was removed", k, s.table.Epoch))
	}
	return ctrl.Result{}, nil
}
