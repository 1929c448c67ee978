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
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/slots"
)

// Labels of DESIGN.md section 6, on every object the operator creates.
const (
	labelName      = "app.kubernetes.io/name"
	labelInstance  = "app.kubernetes.io/instance"
	labelComponent = "app.kubernetes.io/component"
	labelManagedBy = "app.kubernetes.io/managed-by"
	labelShard     = "annshard.io/shard"

	appName         = "annshard"
	managedBy       = "annshard-operator"
	componentShard  = "shard"
	componentRouter = "router"

	// annotationConfigHash on a pod template holds a hash of the settings its pods are
	// started with, so any change to them rolls the pods even if it reaches them only
	// through a file or the environment.
	annotationConfigHash = "annshard.io/config-hash"

	// fieldOwner is the operator's server-side apply field manager.
	fieldOwner = "annshard-operator"

	// tokenKey is the key of the bearer token in the token Secret.
	tokenKey = "token"
	// tokenDir is where pods mount the token Secret.
	tokenDir = "/etc/annshard/token"
	// httpPort is the port both roles of shardserver listen on.
	httpPort = 8080
)

func shardName(idx *annv1alpha1.AnnIndex, k int32) string { return shardSetName(idx.Name, k) }

// shardSetName is the name of shard k's StatefulSet (and Service, PDB) of the index
// named index; its pods are this name plus "-<ordinal>".
func shardSetName(index string, k int32) string        { return fmt.Sprintf("%s-shard-%d", index, k) }
func routerName(idx *annv1alpha1.AnnIndex) string      { return idx.Name + "-router" }
func tokenSecretName(idx *annv1alpha1.AnnIndex) string { return idx.Name + "-token" }
func routingName(idx *annv1alpha1.AnnIndex) string     { return slots.ConfigMapName(idx.Name) }
func serviceAccountName(idx *annv1alpha1.AnnIndex, component string) string {
	return idx.Name + "-" + component
}

// componentLabels are the labels of every object of one component of an index; they are
// also the selector of its pods, so they must never change for an existing index.
func componentLabels(idx *annv1alpha1.AnnIndex, component string) map[string]string {
	return map[string]string{
		labelName:      appName,
		labelInstance:  idx.Name,
		labelComponent: component,
		labelManagedBy: managedBy,
	}
}

// shardLabels are componentLabels plus the shard number.
func shardLabels(idx *annv1alpha1.AnnIndex, k int32) map[string]string {
	l := componentLabels(idx, componentShard)
	l[labelShard] = strconv.Itoa(int(k))
	return l
}

// configHash is a short, stable hash of v's JSON encoding.
func configHash(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only API types go in here; they always encode.
		return "unhashable"
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// createOrUpdate is controllerutil.CreateOrUpdate, except that an object missing from the
// cache is looked up on the API server before it is created: the cache holds only objects
// with the operator's label and may lag behind a creation. mutate sees a zero
// CreationTimestamp when the object is about to be created.
func (r *AnnIndexReconciler) createOrUpdate(ctx context.Context, obj client.Object, mutate func() error) (controllerutil.OperationResult, error) {
	key := client.ObjectKeyFromObject(obj)
	err := r.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) {
		err = r.apiReader().Get(ctx, key, obj)
	}
	switch {
	case apierrors.IsNotFound(err):
		if err := mutate(); err != nil {
			return controllerutil.OperationResultNone, err
		}
		if err := r.Create(ctx, obj); err != nil {
			return controllerutil.OperationResultNone, err
		}
		return controllerutil.OperationResultCreated, nil
	case err != nil:
		return controllerutil.OperationResultNone, err
	}
	before := obj.DeepCopyObject()
	if err := mutate(); err != nil {
		return controllerutil.OperationResultNone, err
	}
	if equality.Semantic.DeepEqual(before, obj) {
		return controllerutil.OperationResultNone, nil
	}
	if err := r.Update(ctx, obj); err != nil {
		return controllerutil.OperationResultNone, err
	}
	return controllerutil.OperationResultUpdated, nil
}

// apply server-side-applies obj, owned by idx, and fills obj with the object the API
// server returned (its status included). Server-side apply sends only the fields the
// operator sets, so defaults and other managers' fields are left alone and an unchanged
// object is not written at all.
func (r *AnnIndexReconciler) apply(ctx context.Context, idx *annv1alpha1.AnnIndex, obj client.Object) error {
	if err := controllerutil.SetControllerReference(idx, obj, r.Scheme); err != nil {
		return fmt.Errorf("setting owner of %s: %w", obj.GetName(), err)
	}
	u, err := toApplyObject(obj, r.Scheme)
	if err != nil {
		return err
	}
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying %s %s: %w", u.GetKind(), obj.GetName(), err)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
		return fmt.Errorf("decoding applied %s %s: %w", u.GetKind(), obj.GetName(), err)
	}
	return nil
}

// toApplyObject turns a typed object into the unstructured apply request: kind set,
// status and the null values that typed structs encode (creationTimestamp: null) removed,
// so the operator claims only fields it means to set.
func toApplyObject(obj client.Object, scheme *runtime.Scheme) (*unstructured.Unstructured, error) {
	gvk, err := apiutil.GVKForObject(obj, scheme)
	if err != nil {
		return nil, fmt.Errorf("finding kind of %T: %w", obj, err)
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("encoding %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	delete(m, "status")
	dropNulls(m)
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(gvk)
	return u, nil
}

func dropNulls(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if e == nil {
				delete(v, k)
				continue
			}
			dropNulls(e)
		}
	case []any:
		for _, e := range v {
			dropNulls(e)
		}
	}
}
