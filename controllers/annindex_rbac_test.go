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
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// TestComponentRoles checks least privilege: read-only and namespaced.
func TestComponentRoles(t *testing.T) {
	tests := []struct {
		component string
		want      []string // resources
	}{
		{componentShard, []string{"configmaps", "pods"}},
		{componentRouter, []string{"configmaps", "pods"}},
	}
	for _, tt := range tests {
		t.Run(tt.component, func(t *testing.T) {
			idx := testIndex()
			role := componentRole(idx, tt.component)
			var got []string
			for _, r := range role.Rules {
				if len(r.Verbs) != 3 || r.Verbs[0] != "get" || r.Verbs[1] != "list" || r.Verbs[2] != "watch" {
					t.Fatalf("verbs %v are not read-only", r.Verbs)
				}
				got = append(got, r.Resources...)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("resources %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("resources %v, want %v", got, tt.want)
				}
			}
			rb := componentRoleBinding(idx, tt.component)
			sa := serviceAccount(idx, tt.component)
			if rb.RoleRef.Name != role.Name || rb.Subjects[0].Name != sa.Name || rb.Subjects[0].Kind != rbacv1.ServiceAccountKind ||
				rb.Subjects[0].Namespace != idx.Namespace {
				t.Fatalf("binding %+v does not bind %s to %s", rb, role.Name, sa.Name)
			}
		})
	}
}
