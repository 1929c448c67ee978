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
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	shardclient "github.com/annshard/annshard/shardserver/client"
)

var t0 = time.Date(2026, 11, 27, 20, 0, 0, 0, time.UTC)

// ready is a ready pod reporting v; unready a pod not ready; unsampled a ready pod the
// collector has no fresh report of.
func ready(v float64) podMetric { return podMetric{Ready: true, Sampled: true, Value: v} }

var (
	unready   = podMetric{}
	unsampled = podMetric{Ready: true}
)

// in is a shard of min 1, max 10, QPSPerReplica target 200, both windows 0, watched for an
// hour, with no history.
func in(pods ...podMetric) autoscaleInput {
	return autoscaleInput{
		Spec: annv1alpha1.AutoscalingSpec{Enabled: true, Metric: annv1alpha1.AutoscalingQPSPerReplica, Target: 200,
			ScaleDownStabilizationSeconds: ptr.To[int32](0)},
		Min: 1, Max: 10, Current: int32(len(pods)), Pods: pods,
		History: shardHistory{Since: t0.Add(-time.Hour)},
		Now:     t0,
	}
}

func recs(ago time.Duration, n int32) []timedReplicas {
	return []timedReplicas{{At: t0.Add(-ago), Replicas: n}}
}

func TestDecideScale(t *testing.T) {
	tests := []struct {
		name    string
		in      autoscaleInput
		desired int32
		held    *scaleRule
	}{
		// The proportional rule and its tolerance.
		{"at target", in(ready(200), ready(200)), 2, nil},
		{"within the 10% tolerance above", in(ready(219), ready(219)), 2, nil},
		{"within the 10% tolerance below", in(ready(181), ready(181)), 2, nil},
		{"just past the tolerance", in(ready(221), ready(221)), 3, nil},
		{"proportional up: ceil(2 * 300/200)", in(ready(300), ready(300)), 3, nil},
		{"proportional up from one pod", in(ready(500)), 3, nil},
		{"proportional down, one step", in(ready(50), ready(50), ready(50)), 2, nil},
		{"clamped to max", func() autoscaleInput { i := in(ready(2000), ready(2000)); i.Max = 4; return i }(), 4, nil},
		{"idle at min", func() autoscaleInput { i := in(ready(0), ready(0)); i.Min = 2; return i }(), 2, &ruleNeverBelowMin},
		{"idle primary alone", in(ready(0)), 1, &ruleNeverThePrimary},
		{"below min after an edit of the spec", func() autoscaleInput { i := in(ready(0)); i.Min = 3; return i }(), 3, nil},
		{"above max after an edit of the spec: one step down", func() autoscaleInput {
			i := in(ready(500), ready(500), ready(500), ready(500))
			i.Max = 2
			return i
		}(), 3, nil},
		{"CPU utilization is proportional too", func() autoscaleInput {
			i := in(ready(60), ready(70))
			i.Spec.Metric, i.Spec.Target = annv1alpha1.AutoscalingCPUUtilization, 50
			return i
		}(), 3, nil},

		// Pods without a sample and pods not ready, as the HPA treats them.
		{"missing sample counts as 0 on a scale-up: lands in tolerance", in(ready(400), unsampled), 2, nil},
		{"missing sample counts as 0 on a scale-up: still up", in(ready(500), unsampled), 3, nil},
		{"missing sample counts as at target on a scale-down", in(ready(20), ready(20), unsampled), 2, nil},
		{"missing sample: filled values flip the direction, no change", in(ready(250), unsampled, unsampled), 3, nil},
		{"unready counts as 0 on a scale-up: flips, no change", in(ready(300), unready), 2, nil},
		{"unready counts as 0 on a scale-up: still up", in(ready(600), unready), 3, nil},
		{"unready is left out of a scale-down", in(ready(50), unready), 1, nil},
		{"no sample at all: no decision", in(unsampled, unready), 2, &ruleNoData},
		{"no sample at all above max: still into bounds", func() autoscaleInput {
			i := in(unsampled, unsampled, unsampled)
			i.Max = 2
			return i
		}(), 2, nil},
		{"a target of 0 is no data", func() autoscaleInput { i := in(ready(100), ready(100)); i.Spec.Target = 0; return i }(), 2, &ruleNoData},

		// Stabilization windows.
		{"down window holds the highest recommendation", func() autoscaleInput {
			i := in(ready(50), ready(50), ready(50))
			i.Spec.ScaleDownStabilizationSeconds = ptr.To[int32](60)
			i.History.Recommendations = recs(30*time.Second, 3)
			return i
		}(), 3, &ruleDownWindow},
		{"down window: an old high recommendation is out of it", func() autoscaleInput {
			i := in(ready(50), ready(50), ready(50))
			i.Spec.ScaleDownStabilizationSeconds = ptr.To[int32](60)
			i.History.Recommendations = recs(90*time.Second, 3)
			return i
		}(), 2, nil},
		{"down window not yet watched in full after a restart", func() autoscaleInput {
			i := in(ready(50), ready(50), ready(50))
			i.Spec.ScaleDownStabilizationSeconds = ptr.To[int32](60)
			i.History.Since = t0.Add(-10 * time.Second)
			return i
		}(), 3, &ruleDownWindow},
		{"down window unset is the default 300 s", func() autoscaleInput {
			i := in(ready(50), ready(50), ready(50))
			i.Spec.ScaleDownStabilizationSeconds = nil
			i.History.Recommendations = recs(200*time.Second, 3)
			return i
		}(), 3, &ruleDownWindow},
		{"up window holds the lowest recommendation", func() autoscaleInput {
			i := in(ready(400), ready(400))
			i.Spec.ScaleUpStabilizationSeconds = 30
			i.History.Recommendations = recs(10*time.Second, 2)
			return i
		}(), 2, &ruleUpWindow},
		{"up window: the lowest over it, not the newest", func() autoscaleInput {
			i := in(ready(400), ready(400))
			i.Spec.ScaleUpStabilizationSeconds = 30
			i.History.Recommendations = append(recs(40*time.Second, 2), recs(10*time.Second, 3)...)
			return i
		}(), 3, &ruleUpWindow},

		// Rate limits.
		{"up at most +2 from one pod", func() autoscaleInput { i := in(ready(2000)); i.Max = 20; return i }(), 3, &ruleUpRate},
		{"up at most +100% from four pods", func() autoscaleInput {
			i := in(ready(2000), ready(2000), ready(2000), ready(2000))
			i.Max = 20
			return i
		}(), 8, &ruleUpRate},
		{"up counts what the period already added", func() autoscaleInput {
			i := in(ready(2000), ready(2000), unready)
			i.Max = 20
			i.History.Changes = []timedReplicas{{At: t0.Add(-10 * time.Second), From: 1, Replicas: 3}}
			return i
		}(), 3, &ruleUpRate},
		{"up: an addition older than the period does not count", func() autoscaleInput {
			i := in(ready(2000), ready(2000), ready(2000))
			i.Max = 20
			i.History.Changes = []timedReplicas{{At: t0.Add(-40 * time.Second), From: 1, Replicas: 3}}
			return i
		}(), 6, &ruleUpRate},
		{"down one replica at a time", in(ready(1), ready(1), ready(1), ready(1)), 3, nil},
		{"down waits scaleDownPeriod after a change", func() autoscaleInput {
			i := in(ready(50), ready(50), ready(50))
			i.History.Changes = []timedReplicas{{At: t0.Add(-5 * time.Second), From: 4, Replicas: 3}}
			return i
		}(), 3, &ruleDownRate},

		// Invariants.
		{"no scale-down while migrating", func() autoscaleInput { i := in(ready(10), ready(10)); i.Migrating = true; return i }(), 2, &ruleNotWhileMigrating},
		{"no scale-down while rolling", func() autoscaleInput { i := in(ready(10), ready(10)); i.Rolling = true; return i }(), 2, &ruleNotWhileRolling},
		{"a migrating shard still scales up", func() autoscaleInput { i := in(ready(400), ready(400)); i.Migrating = true; return i }(), 4, nil},

		// LatencyP99 votes one replica at a time.
		{"p99 over target adds one", func() autoscaleInput { i := latency(in(ready(30), ready(80))); return i }(), 3, nil},
		{"p99 over target waits for unready pods", func() autoscaleInput { i := latency(in(ready(80), unready)); return i }(), 2, nil},
		{"p99 within tolerance holds", func() autoscaleInput { i := latency(in(ready(54), ready(20))); return i }(), 2, nil},
		{"p99 between half and target holds", func() autoscaleInput { i := latency(in(ready(30), ready(20))); return i }(), 2, nil},
		{"p99 under half the target removes one", func() autoscaleInput { i := latency(in(ready(20), ready(10), ready(5))); return i }(), 2, nil},
		{"p99 under half but a pod unsampled: no scale-down", func() autoscaleInput { i := latency(in(ready(20), unsampled)); return i }(), 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decideScale(tt.in)
			if got.Desired != tt.desired || got.Held != tt.held {
				t.Fatalf("decideScale = desired %d held %v (recommendation %d, observed %.1f)\nwant desired %d held %v",
					got.Desired, ruleName(got.Held), got.Recommendation, got.Observed, tt.desired, ruleName(tt.held))
			}
		})
	}
}

func latency(i autoscaleInput) autoscaleInput {
	i.Spec.Metric, i.Spec.Target = annv1alpha1.AutoscalingLatencyP99, 50
	return i
}

func ruleName(r *scaleRule) string {
	if r == nil {
		return "none"
	}
	return r.Name
}

func TestDecideScaleRecheck(t *testing.T) {
	i := in(ready(50), ready(50), ready(50))
	i.History.Changes = []timedReplicas{{At: t0.Add(-5 * time.Second), From: 4, Replicas: 3}}
	if d := decideScale(i); d.Recheck < scaleDownPeriod-5*time.Second || d.Recheck > scaleDownPeriod-4*time.Second {
		t.Fatalf("held by the down rate: recheck after %v, want about %v", d.Recheck, scaleDownPeriod-5*time.Second)
	}
	i = in(ready(50), ready(50), ready(50))
	i.Spec.ScaleDownStabilizationSeconds = ptr.To[int32](60)
	i.History.Recommendations = append(recs(50*time.Second, 3), recs(20*time.Second, 3)...)
	if d := decideScale(i); d.Recheck < 10*time.Second || d.Recheck > 11*time.Second {
		t.Fatalf("held by the down window: recheck after %v, want about 10s, when the older high recommendation leaves it", d.Recheck)
	}
	if d := decideScale(in(ready(200), ready(200))); d.Recheck != 0 {
		t.Fatalf("nothing held: recheck %v", d.Recheck)
	}
}

func TestDecideScaleObserved(t *testing.T) {
	d := decideScale(in(ready(300), ready(100), unready))
	if !d.Known || d.Observed != 200 {
		t.Fatalf("observed = %v known %v, want the mean over the ready sampled pods, 200", d.Observed, d.Known)
	}
	d = decideScale(latency(in(ready(30), ready(80))))
	if d.Observed != 80 {
		t.Fatalf("p99 observed = %v, want the worst pod's, 80", d.Observed)
	}
}

// TestDecideScaleDoesNotFlap drives one shard with load that swings every 10 s between
// twice and half its target, through the memory the reconciler keeps: with a 60 s down
// window the shard grows once and never gives a replica back while the swings go on.
func TestDecideScaleDoesNotFlap(t *testing.T) {
	var mem autoscaleMemory
	k := shardKey{"ns", "idx", 0}
	start := t0.Add(-time.Hour)
	mem.history(k, start)
	current := int32(2)
	var changes []int32
	const totalQPS = 400.0 // at target on two replicas, twice it on one
	for i := range 60 {
		now := start.Add(time.Duration(i) * 5 * time.Second)
		total := totalQPS
		if (i/2)%2 == 1 {
			total = 100
		}
		pods := make([]podMetric, current)
		for p := range pods {
			pods[p] = ready(total / float64(current))
		}
		input := in(pods...)
		input.Spec.ScaleDownStabilizationSeconds = ptr.To[int32](60)
		input.Now, input.History = now, mem.history(k, now)
		d := decideScale(input)
		mem.recommended(k, now, d.Recommendation)
		if d.Desired != current {
			mem.changed(k, now, current, d.Desired)
			changes = append(changes, d.Desired)
			current = d.Desired
		}
	}
	if len(changes) > 1 {
		t.Fatalf("replicas changed %v under swinging load; want at most one change", changes)
	}
}

func TestAutoscaleMemory(t *testing.T) {
	var m autoscaleMemory
	k := shardKey{"ns", "idx", 1}
	h := m.history(k, t0)
	if !h.Since.Equal(t0) || len(h.Recommendations) != 0 {
		t.Fatalf("fresh history = %+v", h)
	}
	m.recommended(k, t0.Add(-2*historyKeep), 5) // older than anything a window sees
	m.recommended(k, t0, 3)
	m.changed(k, t0, 2, 3)
	h = m.history(k, t0.Add(time.Second))
	if len(h.Recommendations) != 1 || h.Recommendations[0].Replicas != 3 || len(h.Changes) != 1 {
		t.Fatalf("history = %+v, want the one recent recommendation and change", h)
	}
	if got := m.lastGrown(k); !got.Equal(t0) {
		t.Fatalf("lastGrown = %v, want %v", got, t0)
	}
	m.changed(k, t0.Add(time.Second), 3, 2)
	if got := m.lastGrown(k); !got.Equal(t0) {
		t.Fatalf("a scale-down is not growth: lastGrown = %v", got)
	}
	m.forget("ns", "idx")
	if h := m.history(k, t0.Add(time.Minute)); !h.Since.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after forget, history starts again: %+v", h)
	}
}

// TestScaleStepDrains walks one scale-down of shard 1 from 3 to 2 replicas: the highest
// ordinal gets the drain mark, the StatefulSet keeps 3 while a router still routes to the
// pod or has requests open to it, and shrinks once every router is done with it; a
// decision that turns back up takes the mark off.
func TestScaleStepDrains(t *testing.T) {
	var mu sync.Mutex
	status := &shardclient.RouterStatus{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_ = json.NewEncoder(w).Encode(status)
	}))
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	setRouter := func(eps ...shardclient.RouterEndpoint) {
		mu.Lock()
		defer mu.Unlock()
		status = &shardclient.RouterStatus{Epoch: 1, Shards: []shardclient.RouterShard{{Shard: 1, Endpoints: eps}}}
	}

	ctx := context.Background()
	idx := testIndex()
	r := fakeReconciler(t, routerPod("r-a", host, int32(p), true), shardPod(1, 0, "127.0.0.9", 0, true), shardPod(1, 1, "127.0.0.9", 0, true), shardPod(1, 2, "127.0.0.9", 0, true))
	const victim = "products-shard-1-2"
	step := func(want int32) (int32, ctrl.Result, *scope) {
		t.Helper()
		s := newScope(idx)
		s.shardSets[1] = shardStatefulSet(idx, 1, 3)
		var pods corev1.PodList
		if err := r.List(ctx, &pods); err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			if p.Labels[labelShard] == "1" {
				s.shardPods[1] = append(s.shardPods[1], p)
			}
		}
		s.replicas[1] = want
		n, res, err := r.scaleStep(ctx, s, 1)
		if err != nil {
			t.Fatal(err)
		}
		return n, res, s
	}
	marked := func(name string) bool {
		t.Helper()
		var p corev1.Pod
		if err := r.Get(ctx, client.ObjectKey{Namespace: idx.Namespace, Name: name}, &p); err != nil {
			t.Fatal(err)
		}
		return p.Annotations[shardclient.DrainAnnotation] == "true"
	}

	setRouter(shardclient.RouterEndpoint{Pod: victim, Ordinal: 2})
	if n, res, _ := step(2); n != 3 || res.RequeueAfter != drainPoll || !marked(victim) {
		t.Fatalf("first step: replicas %d requeue %v marked %v; want 3, %v, the victim marked", n, res.RequeueAfter, marked(victim), drainPoll)
	}
	if marked("products-shard-1-1") || marked("products-shard-1-0") {
		t.Fatal("only the highest ordinal is drained")
	}
	if n, _, s := step(2); n != 3 || !strings.Contains(s.draining[1], "still routes to "+victim) {
		t.Fatalf("router still routes: replicas %d, draining %q", n, s.draining[1])
	}
	setRouter(shardclient.RouterEndpoint{Pod: victim, Ordinal: 2, Draining: true, InFlight: 2})
	if n, _, s := step(2); n != 3 || !strings.Contains(s.draining[1], "2 requests in flight to "+victim) {
		t.Fatalf("requests in flight: replicas %d, draining %q", n, s.draining[1])
	}
	setRouter(shardclient.RouterEndpoint{Pod: victim, Ordinal: 2, Draining: true})
	if n, res, _ := step(2); n != 2 || res.RequeueAfter != 0 {
		t.Fatalf("drained: replicas %d requeue %v, want 2 and no requeue", n, res.RequeueAfter)
	}

	// The load came back before the StatefulSet shrank: the pod stays and routes again.
	if n, _, _ := step(3); n != 3 || marked(victim) {
		t.Fatalf("decision back up: replicas %d, victim marked %v; want 3 and the mark gone", n, marked(victim))
	}
	// Growing needs no drain.
	if n, res, _ := step(5); n != 5 || res.RequeueAfter != 0 {
		t.Fatalf("scale-up: replicas %d requeue %v", n, res.RequeueAfter)
	}
}

// TestShardPodMetrics checks what the autoscaler sees of each pod for each metric: the
// pod's own QPS, p99, or CPU rate over its request; not ready, deleting, missing and
// unreported pods as such.
func TestShardPodMetrics(t *testing.T) {
	idx := testIndex()
	s := newScope(idx)
	withCPU := func(p *corev1.Pod, cores string) *corev1.Pod {
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cores)}
		return p
	}
	deleting := shardPod(1, 3, "127.0.0.9", 0, true)
	deleting.DeletionTimestamp = &metav1.Time{Time: t0}
	for _, p := range []*corev1.Pod{
		withCPU(shardPod(1, 0, "127.0.0.9", 0, true), "500m"),
		withCPU(shardPod(1, 1, "127.0.0.9", 0, false), "500m"),
		shardPod(1, 2, "127.0.0.9", 0, true), // no CPU request
		deleting,
		// ordinal 4 has no pod yet; ordinal 5 is ready and never reported
		shardPod(1, 5, "127.0.0.9", 0, true),
	} {
		s.shardPods[1] = append(s.shardPods[1], *p)
	}
	s.podLoad = map[string]podLoadSample{
		"products-shard-1-0": {QPS: 120, P99Millis: 7, CPUCores: 0.25, HasCPU: true},
		"products-shard-1-1": {QPS: 5, P99Millis: 2, CPUCores: 0.1, HasCPU: true},
		"products-shard-1-2": {QPS: 80, P99Millis: 9, CPUCores: 0.3, HasCPU: true},
		"products-shard-1-3": {QPS: 60, P99Millis: 3},
	}
	tests := []struct {
		metric annv1alpha1.AutoscalingMetric
		want   []podMetric
	}{
		{annv1alpha1.AutoscalingQPSPerReplica, []podMetric{ready(120), unready, ready(80), unready, unready, unsampled}},
		{annv1alpha1.AutoscalingLatencyP99, []podMetric{ready(7), unready, ready(9), unready, unready, unsampled}},
		{annv1alpha1.AutoscalingCPUUtilization, []podMetric{ready(50), unready, unsampled, unready, unready, unsampled}},
	}
	for _, tt := range tests {
		t.Run(string(tt.metric), func(t *testing.T) {
			s.index.Spec.Autoscaling.Metric = tt.metric
			got := shardPodMetrics(s, 1, 6)
			if len(got) != len(tt.want) {
				t.Fatalf("%d pods, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("ordinal %d: %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// TestPodSamples checks the collector's per-pod view: the newest fresh report, the CPU
// rate over the reports of the last cpuRateSpan, none across a restart, nothing stale.
func TestPodSamples(t *testing.T) {
	idx := types.NamespacedName{Namespace: "search", Name: "products"}
	rep := func(qps, cpu float64) shardclient.LoadReport {
		return shardclient.LoadReport{QPS10s: qps, CPUSeconds: cpu, LatencyP99Ms: 4}
	}
	c := &LoadCollector{Interval: 2 * time.Second}
	c.pods = map[types.NamespacedName]*podLoad{
		{Namespace: "search", Name: "a"}: {index: idx, samples: []loadSample{
			{at: t0.Add(-30 * time.Second), report: rep(1, 0)}, // older than cpuRateSpan
			{at: t0.Add(-10 * time.Second), report: rep(10, 100)},
			{at: t0.Add(-1 * time.Second), report: rep(30, 104.5)},
		}},
		{Namespace: "search", Name: "restarted"}: {index: idx, samples: []loadSample{
			{at: t0.Add(-4 * time.Second), report: rep(10, 100)},
			{at: t0.Add(-1 * time.Second), report: rep(10, 1)},
		}},
		{Namespace: "search", Name: "stale"}: {index: idx, samples: []loadSample{{at: t0.Add(-time.Minute), report: rep(10, 1)}}},
		{Namespace: "search", Name: "other"}: {index: types.NamespacedName{Namespace: "search", Name: "x"},
			samples: []loadSample{{at: t0, report: rep(10, 1)}}},
	}
	got := c.podSamples(idx, t0)
	want := map[string]podLoadSample{
		"a":         {QPS: 30, P99Millis: 4, CPUCores: 0.5, HasCPU: true},
		"restarted": {QPS: 10, P99Millis: 4},
	}
	if len(got) != len(want) || got["a"] != want["a"] || got["restarted"] != want["restarted"] {
		t.Fatalf("podSamples = %+v\nwant %+v", got, want)
	}
}

func TestObservedText(t *testing.T) {
	tests := []struct {
		metric   annv1alpha1.AutoscalingMetric
		target   int32
		observed float64
		want     string
	}{
		{annv1alpha1.AutoscalingQPSPerReplica, 40, 212.4, "212 QPS/replica > target 40"},
		{annv1alpha1.AutoscalingQPSPerReplica, 40, 41, "41 QPS/replica = target 40"},
		{annv1alpha1.AutoscalingCPUUtilization, 60, 20, "20% CPU < target 60%"},
		{annv1alpha1.AutoscalingLatencyP99, 50, 80, "p99 80 ms > target 50 ms"},
	}
	for _, tt := range tests {
		got := observedText(annv1alpha1.AutoscalingSpec{Metric: tt.metric, Target: tt.target}, tt.observed)
		if got != tt.want {
			t.Errorf("observedText(%s, %d, %v) = %q, want %q", tt.metric, tt.target, tt.observed, got, tt.want)
		}
	}
}
