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
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	shardclient "github.com/annshard/annshard/shardserver/client"
)

// fakeRouter serves GET /v1/internal/router with *status, checking the token.
func fakeRouter(t *testing.T, token string, status *shardclient.RouterStatus) (ip string, port int32) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/internal/router" || r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"error":{"code":"unauthorized","message":"no"}}`, http.StatusUnauthorized)
			return
		}
		_ = json.NewEncoder(w).Encode(status)
	}))
	t.Cleanup(srv.Close)
	host, p, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return host, int32(n)
}

// routerPod is a router pod of idx at ip:port, Ready or not.
func routerPod(name, ip string, port int32, ready bool) *corev1.Pod {
	idx := testIndex()
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: idx.Namespace, Labels: componentLabels(idx, componentRouter)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "router", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}},
	}
}

func fakeReconciler(t *testing.T, objs ...client.Object) *AnnIndexReconciler {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	idx := testIndex()
	objs = append(objs, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: tokenSecretName(idx), Namespace: idx.Namespace},
		Data:       map[string][]byte{tokenKey: []byte("tok")},
	})
	return &AnnIndexReconciler{Client: fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build(), Scheme: scheme}
}

func TestRoutersAll(t *testing.T) {
	drained := &shardclient.RouterStatus{Epoch: 4, Shards: []shardclient.RouterShard{{Shard: 1, Endpoints: []shardclient.RouterEndpoint{
		{Pod: "products-shard-1-0", Ordinal: 0},
		{Pod: "products-shard-1-2", Ordinal: 2, Draining: true},
	}}}}
	busy := &shardclient.RouterStatus{Epoch: 3, Shards: []shardclient.RouterShard{{Shard: 1, Endpoints: []shardclient.RouterEndpoint{
		{Pod: "products-shard-1-2", Ordinal: 2, Draining: true, InFlight: 2},
	}}}}
	notYet := &shardclient.RouterStatus{Epoch: 4, Shards: []shardclient.RouterShard{{Shard: 1, Endpoints: []shardclient.RouterEndpoint{
		{Pod: "products-shard-1-2", Ordinal: 2},
	}}}}
	forgot := &shardclient.RouterStatus{Epoch: 5, Shards: []shardclient.RouterShard{{Shard: 0}}}

	ip1, p1 := fakeRouter(t, "tok", drained)
	ip2, p2 := fakeRouter(t, "tok", busy)
	ip3, p3 := fakeRouter(t, "tok", notYet)
	ip4, p4 := fakeRouter(t, "tok", forgot)
	deadIP, deadPort := fakeRouter(t, "other-token", drained)
	ctx := context.Background()
	idx := testIndex()

	tests := []struct {
		name    string
		pods    []client.Object
		check   func(*shardclient.RouterStatus) (bool, string)
		wantOK  bool
		culprit []string // substrings of the reasons, in pod order
	}{
		{"no router: nothing routes", nil, podDrained(1, "products-shard-1-2"), true, nil},
		{"every router drained it or never knew it", []client.Object{
			routerPod("r-a", ip1, p1, true), routerPod("r-d", ip4, p4, true),
		}, podDrained(1, "products-shard-1-2"), true, nil},
		{"requests in flight, still routed, unanswered", []client.Object{
			routerPod("r-a", ip1, p1, true), routerPod("r-b", ip2, p2, true), routerPod("r-c", ip3, p3, true),
			routerPod("r-x", deadIP, deadPort, true),
		}, podDrained(1, "products-shard-1-2"), false,
			[]string{"router r-b: 2 requests in flight to products-shard-1-2", "router r-c: still routes to products-shard-1-2", "router r-x:"}},
		{"a router that is not ready is not asked", []client.Object{
			routerPod("r-a", ip1, p1, true), routerPod("r-c", ip3, p3, false),
		}, podDrained(1, "products-shard-1-2"), true, nil},
		{"epoch adopted by all", []client.Object{
			routerPod("r-a", ip1, p1, true), routerPod("r-d", ip4, p4, true),
		}, epochAdopted(4), true, nil},
		{"epoch not adopted by one", []client.Object{
			routerPod("r-a", ip1, p1, true), routerPod("r-b", ip2, p2, true),
		}, epochAdopted(4), false, []string{"router r-b: routes by epoch 3, not yet 4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fakeReconciler(t, tt.pods...)
			ok, not, err := r.routersAll(ctx, idx, tt.check)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.wantOK || len(not) != len(tt.culprit) {
				t.Fatalf("ok=%v culprits=%q, want ok=%v and %d culprits", ok, not, tt.wantOK, len(tt.culprit))
			}
			for i, want := range tt.culprit {
				if !strings.HasPrefix(not[i], want) {
					t.Fatalf("culprit %d = %q, want prefix %q", i, not[i], want)
				}
			}
		})
	}
}
