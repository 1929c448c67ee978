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

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

func TestToApplyObject(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	u, err := toApplyObject(shardStatefulSet(testIndex(), 0, 1), scheme)
	if err != nil {
		t.Fatal(err)
	}
	if u.GetAPIVersion() != "apps/v1" || u.GetKind() != "StatefulSet" {
		t.Fatalf("kind = %s %s", u.GetAPIVersion(), u.GetKind())
	}
	if _, ok := u.Object["status"]; ok {
		t.Fatal("status is sent with the apply request")
	}
	if _, ok := u.Object["metadata"].(map[string]any)["creationTimestamp"]; ok {
		t.Fatal("creationTimestamp: null is sent with the apply request")
	}
	var nulls func(v any) bool
	nulls = func(v any) bool {
		switch v := v.(type) {
		case nil:
			return true
		case map[string]any:
			for _, e := range v {
				if nulls(e) {
					return true
				}
			}
		case []any:
			for _, e := range v {
				if nulls(e) {
					return true
				}
			}
		}
		return false
	}
	if nulls(u.Object) {
		t.Fatal("the apply request holds a null")
	}
	// An object of an unregistered type cannot be applied.
	if _, err := toApplyObject(&corev1.Pod{}, runtime.NewScheme()); err == nil {
		t.Fatal("toApplyObject accepted a type missing from the scheme")
	}
}

func TestConfigHashStable(t *testing.T) {
	a, b := configHash(map[string]int{"x": 1, "y": 2}), configHash(map[string]int{"y": 2, "x": 1})
	if a != b || len(a) != 16 {
		t.Fatalf("configHash not stable: %q %q", a, b)
	}
	if configHash(1) == configHash(2) {
		t.Fatal("configHash collides on different input")
	}
}
