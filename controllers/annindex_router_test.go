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
	"strings"
	"testing"

	"k8s.io/utils/ptr"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
)

func TestRouterGolden(t *testing.T) {
	golden(t, "router_deployment.yaml", routerDeployment(testIndex()))
	golden(t, "router_service.yaml", routerService(testIndex()))
}

func TestRouterArgs(t *testing.T) {
	tests := []struct {
		name string
		edit func(*annv1alpha1.RouterSpec)
		want string
	}{
		{"defaults", func(*annv1alpha1.RouterSpec) {},
			"--listen=$(POD_IP):8080 --index=products --namespace=search --policy=Adaptive --hedge-percentile=95 --cache-entries=10000 --token-file=/etc/annshard/token/token"},
		{"hedging and cache off", func(r *annv1alpha1.RouterSpec) {
			r.HedgeAfterPercentile, r.CacheEntries, r.LoadBalancing = ptr.To[int32](0), ptr.To[int32](0), annv1alpha1.LoadBalancingPowerOfTwoChoices
		}, "--listen=$(POD_IP):8080 --index=products --namespace=search --policy=PowerOfTwoChoices --hedge-percentile=0 --cache-entries=0 --token-file=/etc/annshard/token/token"},
		{"unset pointers take the schema defaults", func(r *annv1alpha1.RouterSpec) { r.HedgeAfterPercentile, r.CacheEntries = nil, nil },
			"--listen=$(POD_IP):8080 --index=products --namespace=search --policy=Adaptive --hedge-percentile=95 --cache-entries=10000 --token-file=/etc/annshard/token/token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := testIndex()
			tt.edit(&idx.Spec.Router)
			if got := strings.Join(routerArgs(idx), " "); got != tt.want {
				t.Fatalf("routerArgs =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestRouterConfigHash(t *testing.T) {
	base := routerConfigHash(testIndex())
	tests := []struct {
		name  string
		edit  func(*annv1alpha1.AnnIndex)
		rolls bool
	}{
		{"policy", func(i *annv1alpha1.AnnIndex) { i.Spec.Router.LoadBalancing = annv1alpha1.LoadBalancingRoundRobin }, true},
		{"cache", func(i *annv1alpha1.AnnIndex) { i.Spec.Router.CacheEntries = ptr.To[int32](5) }, true},
		{"image", func(i *annv1alpha1.AnnIndex) { i.Spec.ShardServer.Image = "x:2" }, true},
		{"router replicas", func(i *annv1alpha1.AnnIndex) { i.Spec.Router.Replicas = 7 }, false},
		{"hnsw", func(i *annv1alpha1.AnnIndex) { i.Spec.HNSW.EfSearch = 7 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := testIndex()
			tt.edit(idx)
			if got := routerConfigHash(idx); (got != base) != tt.rolls {
				t.Fatalf("hash changed = %v, want %v", got != base, tt.rolls)
			}
		})
	}
}
