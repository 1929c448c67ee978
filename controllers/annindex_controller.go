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
	// do harm (see reconcileRouting); nil uses Client.
	APIReader client.Reader
}

func (r *AnnIndexReconciler) apiReader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}

// scope is what the phases of one reconcile share: the index, and the facts observed
// while applying its objects, from which setStatus derives the status.
type scope struct {
	index *annv1alpha1.AnnIndex

	// table is the routing table read from (or just written to) the routing ConfigMap;
	// nil until the routing phase has read it.
	table *slots.Table
	// shardSets are the shard StatefulSets by shard number, as the API server returned
	// them; it includes StatefulSets of shards no longer in the table (never deleted).
	// Their spec.replicas is each shard's desired replica count.
	shardSets map[int32]*appsv1.StatefulSet
	// primaryReady says whether ordinal 0 of each shard is Ready.
	primaryReady map[int32]bool
	// router is the router Deployment as the API server returned it; nil if not applied.
	router *appsv1.Deployment
	// load is the per-shard load from the collector; loadKnown is false when there is
	// no collector, and the figures in status are then left alone.
	load      map[int32]ShardLoad
	loadKnown bool
	// err is the error of the phase that stopped the reconcile, reported by Degraded.
	err error
}

func newScope(idx *annv1alpha1.AnnIndex) *scope {
	return &scope{
		index:        idx,
		shardSets:    map[int32]*appsv1.StatefulSet{},
		primaryReady: map[int32]bool{},
	}
}

// phase is one step of a reconcile. Phases run in order and stop at the first error, so a
// later phase may rely on what an earlier one put in the scope.
type phase func(ctx context.Context, s *scope) error

// The operator's own permissions, least privilege: it never deletes what it creates
// (owner references let the garbage collector do that), and only reads pods.
// +kubebuilder:rbac:groups=annshard.io,resources=annindexes,verbs=get;list;watch
// +kubebuilder:rbac:groups=annshard.io,resources=annindexes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=annshard.io,resources=annindexes/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets;configmaps;services;serviceaccounts,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=apps,resources=statefulsets;deployments,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;update;patch

// Reconcile brings the objects of one AnnIndex to its spec and writes its status once.
func (r *AnnIndexReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, reterr error) {
	idx := &annv1alpha1.AnnIndex{}
	if err := r.Get(ctx, req.NamespacedName, idx); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !idx.DeletionTimestamp.IsZero() {
		// The garbage collector removes the owned objects; nothing to converge.
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
	return ctrl.Result{}, runPhases(ctx, s,
		r.reconcileSecret,
		r.reconcileRBAC,
		r.reconcileRouting,
		r.reconcileShards,
		r.reconcileRouter,
		r.observeLoad,
	)
}

// observeLoad takes the collector's current figures for the index; it cannot fail, as
// load is advisory.
func (r *AnnIndexReconciler) observeLoad(_ context.Context, s *scope) error {
	if r.Load != nil {
		s.load, s.loadKnown = r.Load.ShardLoad(client.ObjectKeyFromObject(s.index)), true
	}
	return nil
}

func runPhases(ctx context.Context, s *scope, phases ...phase) error {
	for _, p := range phases {
		if err := p(ctx, s); err != nil {
			return err
		}
	}
	return nil
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
