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

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
)

var readVerbs = []string{"get", "list", "watch"}

// serviceAccount is the identity of one component's pods.
func serviceAccount(idx *annv1alpha1.AnnIndex, component string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{
			Name:      serviceAccountName(idx, component),
			Namespace: idx.Namespace,
			Labels:    componentLabels(idx, component),
		},
	}
}

// componentRole is what a component's pods may read: the routing ConfigMap (routers route
// by it, shards learn the slots they own) and pods, because discovery goes through pods,
// never DNS or EndpointSlices: routers watch the shard pods, a read replica watches its
// shard's primary pod for its address.
func componentRole(idx *annv1alpha1.AnnIndex, component string) *rbacv1.Role {
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: readVerbs},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: readVerbs},
	}
	return &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{
			Name:      serviceAccountName(idx, component),
			Namespace: idx.Namespace,
			Labels:    componentLabels(idx, component),
		},
		Rules: rules,
	}
}

// componentRoleBinding grants componentRole to the component's ServiceAccount.
func componentRoleBinding(idx *annv1alpha1.AnnIndex, component string) *rbacv1.RoleBinding {
	name := serviceAccountName(idx, component)
	return &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: idx.Namespace, Labels: componentLabels(idx, component)},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: idx.Namespace}},
	}
}

// applyRBAC applies the ServiceAccount, Role and RoleBinding of both components.
func (r *AnnIndexReconciler) applyRBAC(ctx context.Context, s *scope) (ctrl.Result, error) {
	for _, c := range []string{componentShard, componentRouter} {
		for _, obj := range []client.Object{serviceAccount(s.index, c), componentRole(s.index, c), componentRoleBinding(s.index, c)} {
			if err := r.apply(ctx, s.index, obj); err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	return ctrl.Result{}, nil
}
