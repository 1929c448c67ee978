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
	"errors"
	"fmt"
	"net/http"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/slots"
)

// AnnIndexReconciler reconciles AnnIndex objects. It holds only clients: everything one
// reconcile learns lives in its scope.
type AnnIndexReconciler struct {
	client.Client
	Scheme *runtime.Scheme
	// Recorder emits events on condition transitions; nil disables events.
	Recorder events.EventRecorder
	// Load is the load collector whose figures go into status.shards; nil leaves them
	// as they are.
	Load *LoadCollector
	// APIReader reads from the API server, bypassing the cache, where a stale read could
	// do harm (see observeRouting and observeShards); nil uses Client.
	APIReader client.Reader
	// HTTP is the client for the routers' status endpoint; nil uses one with a short
	// timeout.
	HTTP *http.Client

	// scaleMemory is the autoscaler's per-shard history of recommendations and changes,
	// kept in memory as the HPA keeps it (see shardHistory for what a restart loses).
	scaleMemory autoscaleMemory
	// Shards reaches a shard's primary for the migration executor; nil dials the
	// primary pod over HTTP (dialShardPrimary). Tests put a fake here.
	Shards ShardDialer
}

func (r *AnnIndexReconciler) apiReader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}

// scope is what the phases of one reconcile share: the index, the facts observed, the
// decisions taken on them, and what the API server returned when they were applied; the
// status is derived from it.
type scope struct {
	index *annv1alpha1.AnnIndex

	// Observed.

	// table is the routing table read from (or just written to) the routing ConfigMap;
	// nil until the routing phase has read it.
	table *slots.Table
	// shardSets are the shard StatefulSets by shard number: as observed, then as the API
	// server returned them once applied. It includes StatefulSets of shards no longer in
	// the table (never deleted). Their spec.replicas is what each shard runs now.
	shardSets map[int32]*appsv1.StatefulSet
	// shardPods are the pods of every shard StatefulSet of the index, by shard number.
	shardPods map[int32][]corev1.Pod
	// primaryReady says whether ordinal 0 of each shard is Ready.
	primaryReady map[int32]bool
	// load is the per-shard load from the collector; loadKnown is false when there is
	// no collector, and the figures in status are then left alone.
	load      map[int32]ShardLoad
	loadKnown bool
	// podLoad is the newest fresh load report of each shard pod, by pod name.
	podLoad map[string]podLoadSample

	// Decided.

	// replicas is the replica count decided for each shard of the routing table; the
	// apply phase moves each StatefulSet toward it.
	replicas map[int32]int32
	// scale is the autoscaler's decision for each shard it decided for (autoscaling on,
	// StatefulSet present).
	scale map[int32]scaleDecision
	// grown says which shards the autoscaler grew within the startup budget: their pods
	// not ready yet are replicas coming up, shown by Scaling, not only by Degraded.
	grown map[int32]bool
	// shrinkTable is the planner's decision that the table may drop the shards past
	// spec.shards: they own nothing and no slot moves.
	shrinkTable bool

	// Applied.

	// draining says, per shard, which replica is being taken out of routing before the
	// StatefulSet shrinks, and what it waits for.
	draining map[int32]string

	// router is the router Deployment as the API server returned it; nil if not applied.
	router *appsv1.Deployment
	// err is the error of the phase that stopped the reconcile, reported by Degraded.
	err error
}

func newScope(idx *annv1alpha1.AnnIndex) *scope {
	return &scope{
		index:        idx,
		shardSets:    map[int32]*appsv1.StatefulSet{},
		shardPods:    map[int32][]corev1.Pod{},
		primaryReady: map[int32]bool{},
		replicas:     map[int32]int32{},
		scale:        map[int32]scaleDecision{},
		grown:        map[int32]bool{},
		draining:     map[int32]string{},
	}
}

// phase is one step of a reconcile. Phases run in order and stop at the first error, so a
// later phase may rely on what an earlier one put in the scope. A phase that waits for
// something outside the operator (a drain, a migration step) returns RequeueAfter; the
// reconcile asks to be called again after the shortest wait any phase asked for.
type phase func(ctx context.Context, s *scope) (ctrl.Result, error)

// The operator's own permissions, least privilege: it deletes only the StatefulSet,
// Service and PodDisruptionBudget of a shard a reshard emptied (owner references let the
// garbage collector remove the rest with the index), and of pods it only reads them and
// patches the drain annotation onto a shard replica it is about to remove.
// +kubebuilder:rbac:groups=annshard.io,resources=annindexes,verbs=get;list;watch
// +kubebuilder:rbac:groups=annshard.io,resources=annindexes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=annshard.io,resources=annindexes/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets;configmaps;serviceaccounts,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;update;patch

// Reconcile brings the objects of one AnnIndex to its spec and writes its status once.
func (r *AnnIndexReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, reterr error) {
	idx := &annv1alpha1.AnnIndex{}
	if err := r.Get(ctx, req.NamespacedName, idx); err != nil {
		if apierrors.IsNotFound(err) {
			r.scaleMemory.forget(req.Namespace, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !idx.DeletionTimestamp.IsZero() {
		// The garbage collector removes the owned objects; nothing to converge.
		r.scaleMemory.forget(idx.Namespace, idx.Name)
		return ctrl.Result{}, nil
	}
	s := newScope(idx)
	before := idx.DeepCopy()
	defer func() {
		s.err = reterr
		setStatus(s)
		if reterr == nil {
			idx.Status.ObservedGeneration = idx.Generation
		}
		if err := r.Status().Patch(ctx, idx, client.MergeFrom(before)); err != nil {
			if apierrors.IsNotFound(err) {
				return // deleted while we reconciled: nothing left to report on
			}
			reterr = errors.Join(reterr, fmt.Errorf("patching AnnIndex status: %w", err))
			return
		}
		r.recordTransitions(idx, before.Status.Conditions)
	}()
	// One order (DESIGN.md section 6): observe the cluster, decide on what was observed,
	// apply the decisions, and derive the status (deferred above) from all three.
	return runPhases(ctx, s,
		// Observe.
		r.observeRouting,
		r.observeShards,
		r.observeLoad,
		// Decide.
		r.decideReplicas,
		r.decideMigrations,
		// Apply.
		r.applySecret,
		r.applyRBAC,
		r.applyShards,
		r.applyMigrationStep,
		r.applyRouter,
	)
}

// observeLoad takes the collector's current figures for the index; it cannot fail, as
// load is advisory.
func (r *AnnIndexReconciler) observeLoad(_ context.Context, s *scope) (ctrl.Result, error) {
	if r.Load != nil {
		key := client.ObjectKeyFromObject(s.index)
		s.load, s.loadKnown = r.Load.ShardLoad(key), true
		s.podLoad = r.Load.podSamples(key, time.Now())
	}
	return ctrl.Result{}, nil
}

// runPhases runs the phases in order until one fails and merges what they asked for:
// the lowest non-zero RequeueAfter wins (cluster-api's LowestNonZeroResult), so the
// phase that must look again soonest is served.
func runPhases(ctx context.Context, s *scope, phases ...phase) (ctrl.Result, error) {
	var res ctrl.Result
	for _, p := range phases {
		got, err := p(ctx, s)
		res = lowestNonZeroResult(res, got)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// lowestNonZeroResult merges two results: the shorter non-zero RequeueAfter.
func lowestNonZeroResult(a, b ctrl.Result) ctrl.Result {
	switch {
	case a.RequeueAfter == 0:
		return b
	case b.RequeueAfter == 0:
		return a
	}
	return ctrl.Result{RequeueAfter: min(a.RequeueAfter, b.RequeueAfter)}
}

// recordTransitions emits an event when a condition a user acts on changes status; the
// event reuses the condition's reason. Conditions appearing as Unknown are not news.
func (r *AnnIndexReconciler) recordTransitions(idx *annv1alpha1.AnnIndex, old []metav1.Condition) {
	if r.Recorder == nil {
		return
	}
	for _, t := range []string{annv1alpha1.ConditionAvailable, annv1alpha1.ConditionDegraded, annv1alpha1.ConditionMigrating} {
		now := meta.FindStatusCondition(idx.Status.Conditions, t)
		if now == nil || now.Status == metav1.ConditionUnknown {
			continue
		}
		if was := meta.FindStatusCondition(old, t); was != nil && was.Status == now.Status {
			continue
		}
		kind := corev1.EventTypeNormal
		if (t == annv1alpha1.ConditionAvailable && now.Status == metav1.ConditionFalse) || (t != annv1alpha1.ConditionAvailable && now.Status == metav1.ConditionTrue && now.Reason != annv1alpha1.ReasonMigrationInProgress) {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(idx, nil, kind, now.Reason, t, "%s=%s: %s", t, now.Status, now.Message)
	}
}

// SetupWithManager registers the reconciler: it owns every object it creates and watches
// the shard and router pods (by the instance label) for readiness. With a load collector,
// it runs the collector (on the leader only) and reconciles an index whose load changed.
func (r *AnnIndexReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr)
	if r.Load != nil {
		if r.Load.Events == nil {
			r.Load.Events = make(chan event.GenericEvent, 128)
		}
		if err := mgr.Add(r.Load); err != nil {
			return fmt.Errorf("adding the load collector: %w", err)
		}
		b = b.WatchesRawSource(source.Channel(r.Load.Events, &handler.EnqueueRequestForObject{}))
	}
	return b.
		For(&annv1alpha1.AnnIndex{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.Secret{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&rbacv1.Role{}).
		Owns(&rbacv1.RoleBinding{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&appsv1.Deployment{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToIndex)).
		Named("annindex").
		Complete(r)
}

// podToIndex maps a pod of an index to the index, by the instance label.
func podToIndex(_ context.Context, o client.Object) []reconcile.Request {
	l := o.GetLabels()
	if l[labelManagedBy] != managedBy || l[labelInstance] == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: l[labelInstance]}}}
}

// CacheByObject narrows the manager's cache to the objects the operator manages (by the
// managed-by label): not every Secret, ConfigMap and Pod of the cluster. Reads that must
// not miss an unlabelled object go to the API server (createOrUpdate).
func CacheByObject() map[client.Object]cache.ByObject {
	managed := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{labelManagedBy: managedBy})}
	return map[client.Object]cache.ByObject{
		&corev1.Pod{}:                   managed,
		&corev1.Secret{}:                managed,
		&corev1.ConfigMap{}:             managed,
		&corev1.Service{}:               managed,
		&corev1.ServiceAccount{}:        managed,
		&rbacv1.Role{}:                  managed,
		&rbacv1.RoleBinding{}:           managed,
		&appsv1.StatefulSet{}:           managed,
		&appsv1.Deployment{}:            managed,
		&policyv1.PodDisruptionBudget{}: managed,
	}
}
