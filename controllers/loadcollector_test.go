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
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"

	shardclient "github.com/annshard/annshard/shardserver/client"
)

// shardPod is a Ready pod of shard k, ordinal ord, of index "products" in "search".
func shardPod(k, ord int, ip string, port int32, ready bool) *corev1.Pod {
	idx := testIndex()
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: shardName(idx, int32(k)) + "-" + strconv.Itoa(ord), Namespace: "search", Labels: shardLabels(idx, int32(k)),
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "shardserver"}}},
		Status: corev1.PodStatus{
			PodIP:      ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
		},
	}
	if port != 0 {
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: port}}
	}
	return p
}

func TestScrapeTargets(t *testing.T) {
	deleting := shardPod(0, 2, "10.0.0.3", 0, true)
	deleting.DeletionTimestamp = &metav1.Time{}
	foreign := shardPod(0, 3, "10.0.0.4", 0, true)
	foreign.Name = "other-0"
	pods := []corev1.Pod{
		*shardPod(0, 0, "10.0.0.1", 0, true),
		*shardPod(1, 1, "fd00::1", 9090, true),
		*shardPod(0, 1, "10.0.0.2", 0, false), // not ready
		*shardPod(1, 0, "", 0, true),          // no IP yet
		*deleting,
		*foreign,
	}
	got := scrapeTargets(pods)
	want := []loadTarget{
		{pod: types.NamespacedName{Namespace: "search", Name: "products-shard-0-0"}, index: types.NamespacedName{Namespace: "search", Name: "products"},
			shard: 0, ordinal: 0, url: "http://10.0.0.1:8080"},
		{pod: types.NamespacedName{Namespace: "search", Name: "products-shard-1-1"}, index: types.NamespacedName{Namespace: "search", Name: "products"},
			shard: 1, ordinal: 1, url: "http://[fd00::1]:9090"},
	}
	if len(got) != len(want) {
		t.Fatalf("targets = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("target %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestAggregateLoad(t *testing.T) {
	rep := func(vectors int, qps, p99 float64) shardclient.LoadReport {
		return shardclient.LoadReport{Vectors: vectors, QPS10s: qps, LatencyP99Ms: p99}
	}
	tests := []struct {
		name string
		pods []podLatest
		want map[int32]ShardLoad
	}{
		{"none", nil, map[int32]ShardLoad{}},
		{"primary's vectors win over a lagging replica, whatever the order", []podLatest{
			{shard: 0, ordinal: 1, report: rep(90, 10.4, 2.1)},
			{shard: 0, ordinal: 0, report: rep(100, 20.4, 5.5)},
			{shard: 0, ordinal: 2, report: rep(95, 0.3, 1)},
		}, map[int32]ShardLoad{0: {Vectors: 100, QPS: 31, P99Millis: 6, Pods: 3}}},
		{"without the primary, the most any replica holds", []podLatest{
			{shard: 1, ordinal: 2, report: rep(70, 1, 1)},
			{shard: 1, ordinal: 1, report: rep(80, 1, 1)},
		}, map[int32]ShardLoad{1: {Vectors: 80, QPS: 2, P99Millis: 1, Pods: 2}}},
		{"broken figures count as zero", []podLatest{
			{shard: 2, ordinal: 0, report: rep(5, math.NaN(), math.Inf(1))},
			{shard: 3, ordinal: 0, report: rep(6, -4, -1)},
		}, map[int32]ShardLoad{2: {Vectors: 5, Pods: 1}, 3: {Vectors: 6, Pods: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := aggregateLoad(tt.pods)
			if len(got) != len(tt.want) {
				t.Fatalf("aggregateLoad = %+v, want %+v", got, tt.want)
			}
			for k, w := range tt.want {
				if got[k] != w {
					t.Fatalf("shard %d = %+v, want %+v", k, got[k], w)
				}
			}
		})
	}
}

// loadServer serves a LoadReport on 127.0.0.1 and returns its port; report may change
// between scrapes.
func loadServer(t *testing.T, report *atomic.Pointer[shardclient.LoadReport]) int32 {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/load" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(report.Load())
	}))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return int32(n)
}

func TestScrapeOnce(t *testing.T) {
	var primary, replica atomic.Pointer[shardclient.LoadReport]
	primary.Store(&shardclient.LoadReport{Vectors: 1000, QPS10s: 40, LatencyP99Ms: 3, SlotQueries: map[int]uint64{7: 100}})
	replica.Store(&shardclient.LoadReport{Vectors: 990, QPS10s: 60, LatencyP99Ms: 8, SlotQueries: map[int]uint64{7: 50, 9: 10}})
	down := httptest.NewServer(http.NotFoundHandler())
	downPort, _ := strconv.Atoi(down.URL[len("http://127.0.0.1:"):])
	down.Close() // a pod that stopped answering

	reader := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(
		shardPod(0, 0, "127.0.0.1", loadServer(t, &primary), true),
		shardPod(0, 1, "127.0.0.1", loadServer(t, &replica), true),
		shardPod(1, 0, "127.0.0.1", int32(downPort), true),
	).Build()
	events := make(chan event.GenericEvent, 4)
	c := &LoadCollector{Reader: reader, Interval: time.Second, Events: events}
	ctx := context.Background()
	idx := types.NamespacedName{Namespace: "search", Name: "products"}
	t0 := time.Unix(1000, 0)

	c.ScrapeOnce(ctx, t0)
	want := ShardLoad{Vectors: 1000, QPS: 100, P99Millis: 8, Pods: 2}
	if got := c.ShardLoad(idx); len(got) != 1 || got[0] != want {
		t.Fatalf("ShardLoad = %+v, want shard 0 only: %+v", got, want)
	}
	if n := len(events); n != 1 {
		t.Fatalf("%d events after the first scrape, want 1", n)
	}
	if ev := <-events; ev.Object.GetName() != "products" || ev.Object.GetNamespace() != "search" {
		t.Fatalf("event names %s/%s", ev.Object.GetNamespace(), ev.Object.GetName())
	}

	c.ScrapeOnce(ctx, t0.Add(time.Second))
	if n := len(events); n != 0 {
		t.Fatalf("unchanged load sent %d events", n)
	}

	primary.Store(&shardclient.LoadReport{Vectors: 1010, QPS10s: 40, LatencyP99Ms: 3, SlotQueries: map[int]uint64{7: 300}})
	replica.Store(&shardclient.LoadReport{Vectors: 1000, QPS10s: 60, LatencyP99Ms: 8, SlotQueries: map[int]uint64{7: 10, 9: 30}}) // restarted
	c.ScrapeOnce(ctx, t0.Add(3*time.Second))
	if got := c.ShardLoad(idx)[0].Vectors; got != 1010 {
		t.Fatalf("vectors = %d after a write, want 1010", got)
	}
	if n := len(events); n != 1 {
		t.Fatalf("%d events after a change, want 1", n)
	}
	// Over the last 2 s: the primary's slot 7 grew by 200; the replica restarted, so its
	// slot 7 (50 -> 10) counts from zero, and its slot 9 grew from 10 to 30.
	intervals := c.SlotLoad(idx, t0.Add(3*time.Second))
	if len(intervals) != 2 {
		t.Fatalf("%d intervals, want 2", len(intervals))
	}
	if q, want7, want9 := intervals[1].Queries, (200.0+10)/2, 20.0/2; math.Abs(q[7]-want7) > 1e-9 || math.Abs(q[9]-want9) > 1e-9 {
		t.Fatalf("slot query rates = %v, want 7: %.3f, 9: %.3f", q, want7, want9)
	}

	// Reports go stale when pods stop answering, and vanish with the pods.
	if got := c.ShardLoad(idx); len(got) != 1 {
		t.Fatalf("ShardLoad = %+v", got)
	}
	if err := reader.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace("search")); err != nil {
		t.Fatal(err)
	}
	c.ScrapeOnce(ctx, t0.Add(4*time.Second))
	if got := c.ShardLoad(idx); len(got) != 0 {
		t.Fatalf("ShardLoad of an index without pods = %+v", got)
	}
}

func TestLoadWindowBounded(t *testing.T) {
	var rep atomic.Pointer[shardclient.LoadReport]
	rep.Store(&shardclient.LoadReport{Vectors: 1})
	reader := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(shardPod(0, 0, "127.0.0.1", loadServer(t, &rep), true)).Build()
	c := &LoadCollector{Reader: reader, Window: 3}
	for i := range 10 {
		c.ScrapeOnce(context.Background(), time.Unix(int64(i), 0))
	}
	if len(c.pods) != 1 {
		t.Fatalf("collector holds %d pods, want 1", len(c.pods))
	}
	for _, pl := range c.pods {
		if len(pl.samples) != 3 || pl.samples[2].at != time.Unix(9, 0) {
			t.Fatalf("window holds %d samples, newest at %v", len(pl.samples), pl.samples[len(pl.samples)-1].at)
		}
	}
}

// SlotLoad gives one sample per scrape interval: partition-scoped queries of every pod,
// writes of the primary only (a replica applies the same writes again); ReplicaLag the
// worst read replica's lag.
func TestSlotLoadAndReplicaLag(t *testing.T) {
	var primary, replica atomic.Pointer[shardclient.LoadReport]
	primary.Store(&shardclient.LoadReport{SlotQueries: map[int]uint64{7: 100}, SlotWrites: map[int]uint64{7: 10}})
	replica.Store(&shardclient.LoadReport{SlotQueries: map[int]uint64{7: 50}, SlotWrites: map[int]uint64{7: 10}, ReplicationLagRecords: 40})
	reader := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(
		shardPod(0, 0, "127.0.0.1", loadServer(t, &primary), true),
		shardPod(0, 1, "127.0.0.1", loadServer(t, &replica), true),
	).Build()
	c := &LoadCollector{Reader: reader, Interval: time.Second}
	ctx := context.Background()
	idx := types.NamespacedName{Namespace: "search", Name: "products"}
	t0 := time.Unix(1000, 0)

	c.ScrapeOnce(ctx, t0)
	if got := c.SlotLoad(idx, t0); len(got) != 0 {
		t.Fatalf("one scrape gave %d intervals", len(got))
	}
	primary.Store(&shardclient.LoadReport{SlotQueries: map[int]uint64{7: 120, 9: 4}, SlotWrites: map[int]uint64{7: 30}})
	replica.Store(&shardclient.LoadReport{SlotQueries: map[int]uint64{7: 60}, SlotWrites: map[int]uint64{7: 30}, ReplicationLagRecords: 5})
	c.ScrapeOnce(ctx, t0.Add(2*time.Second))
	primary.Store(&shardclient.LoadReport{SlotQueries: map[int]uint64{7: 120, 9: 8}, SlotWrites: map[int]uint64{7: 30}})
	c.ScrapeOnce(ctx, t0.Add(4*time.Second))

	got := c.SlotLoad(idx, t0.Add(4*time.Second))
	if len(got) != 2 {
		t.Fatalf("%d intervals, want 2", len(got))
	}
	// First interval, 2 s: queries 20+10 on slot 7 and 4 on slot 9; writes 20 (primary).
	if q, w := got[0].Queries, got[0].Writes; q[7] != 15 || q[9] != 2 || w[7] != 10 {
		t.Fatalf("first interval: queries %v, writes %v", q, w)
	}
	if q, w := got[1].Queries, got[1].Writes; q[7] != 0 || q[9] != 2 || w[7] != 0 {
		t.Fatalf("second interval: queries %v, writes %v", q, w)
	}
	if got := c.SlotLoad(idx, t0.Add(time.Minute)); got != nil {
		t.Fatalf("stale load gave %d intervals", len(got))
	}
	if lag, n := c.ReplicaLag(idx, 0, t0.Add(4*time.Second)); lag != 5 || n != 1 {
		t.Fatalf("ReplicaLag = %d over %d replicas, want 5 over 1", lag, n)
	}
	if lag, n := c.ReplicaLag(idx, 0, t0.Add(time.Minute)); lag != 0 || n != 0 {
		t.Fatalf("stale ReplicaLag = %d over %d", lag, n)
	}
	var none *LoadCollector
	if none.SlotLoad(idx, t0) != nil {
		t.Fatal("a nil collector has load")
	}
}
