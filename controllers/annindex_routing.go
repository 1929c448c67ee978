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
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/slots"
)

// ErrRoutingTableLost is returned when the routing table of a running index is gone and
// cannot be rebuilt: slots have moved since creation, so an even table would send
// queries and writes to shards that do not hold the data.
var ErrRoutingTableLost = errors.New("routing table lost")

// initialTable is the table to write when the routing ConfigMap has none. A new index
// (no epoch in status) gets slots.Even(spec.shards) at epoch 1. A running index whose
// table was still the initial one (epoch 1) gets that same table back, rebuilt from
// the shards that owned slots, not from spec.shards, which may hold a pending reshard.
// Past epoch 1 the table cannot be rebuilt, and guessing would misroute data.
func initialTable(idx *annv1alpha1.AnnIndex) (slots.Table, error) {
	switch epoch := idx.Status.RoutingEpoch; {
	case epoch == 0:
		return slots.Even(int(idx.Spec.Shards)), nil
	case epoch == 1:
		n := 0
		for _, sh := range idx.Status.Shards {
			if sh.Slots > 0 {
				n++
			}
		}
		if n > 0 {
			return slots.Even(n), nil
		}
	}
	return slots.Table{}, fmt.Errorf("%w: ConfigMap %s has no %s and the table at epoch %d cannot be rebuilt; restore it from a backup",
		ErrRoutingTableLost, routingName(idx), slots.ConfigMapKey, idx.Status.RoutingEpoch)
}

// mutateRoutingConfigMap makes cm the index's routing ConfigMap and returns the table it
// holds. A missing table is written by initialTable. An existing table is never
// overwritten, not even when spec.shards changed: the migration executor owns every
// change, because a table that moves slots without moving their data loses writes. An
// unreadable table is an error, left for a human.
func mutateRoutingConfigMap(idx *annv1alpha1.AnnIndex, cm *corev1.ConfigMap) (slots.Table, error) {
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	for k, v := range componentLabels(idx, "routing") {
		cm.Labels[k] = v
	}
	if text, ok := cm.Data[slots.ConfigMapKey]; ok {
		t, err := slots.Parse([]byte(text))
		if err != nil {
			return slots.Table{}, fmt.Errorf("reading routing table %s/%s: %w", cm.Name, slots.ConfigMapKey, err)
		}
		return t, nil
	}
	t, err := initialTable(idx)
	if err != nil {
		return slots.Table{}, err
	}
	b, err := json.Marshal(t)
	if err != nil {
		return slots.Table{}, fmt.Errorf("encoding routing table: %w", err)
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[slots.ConfigMapKey] = string(b)
	return t, nil
}

// observeRouting reads the routing table into the scope, creating the routing ConfigMap
// with the initial table first if it is missing; the shard phases run one StatefulSet per
// shard of that table. It is the one write among the observe phases: the table is the
// fact every later phase follows, and only the migration executor changes it afterwards.
//
// Writing a table is the one decision here that can misroute data, so it rests on fresh
// facts: createOrUpdate looks a ConfigMap missing from the cache up on the API server,
// and a new table is decided on the index as the API server has it (the cached index may
// predate the status write that recorded a newer epoch).
func (r *AnnIndexReconciler) observeRouting(ctx context.Context, s *scope) (ctrl.Result, error) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: routingName(s.index), Namespace: s.index.Namespace}}
	var table slots.Table
	res, err := r.createOrUpdate(ctx, cm, func() error {
		idx := s.index
		if cm.CreationTimestamp.IsZero() {
			idx = &annv1alpha1.AnnIndex{}
			if err := r.apiReader().Get(ctx, client.ObjectKeyFromObject(s.index), idx); err != nil {
				return fmt.Errorf("reading AnnIndex %s before writing its routing table: %w", s.index.Name, err)
			}
		}
		var err error
		if table, err = mutateRoutingConfigMap(idx, cm); err != nil {
			return err
		}
		return controllerutil.SetControllerReference(s.index, cm, r.Scheme)
	})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("reconciling routing ConfigMap %s: %w", cm.Name, err)
	}
	if res == controllerutil.OperationResultCreated {
		log.FromContext(ctx).Info("Created routing table", "configMap", cm.Name, "shards", table.Shards, "epoch", table.Epoch)
	}
	s.table = &table
	return ctrl.Result{}, nil
}
