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
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	shardclient "github.com/annshard/annshard/shardserver/client"
)

// fakeLoad is a shard pod's load endpoint whose QPS the spec sets.
type fakeLoad struct {
	qps  atomic.Int64
	port int32
}

func newFakeLoad() *fakeLoad {
	f := &fakeLoad{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(shardclient.LoadReport{QPS10s: float64(f.qps.Load()), Vectors: 100, Ready: true})
	}))
	DeferCleanup(srv.Close)
	_, p, err := net.SplitHostPort(srv.Listener.Addr().String())
	Expect(err).NotTo(HaveOccurred())
	n, err := strconv.Atoi(p)
	Expect(err).NotTo(HaveOccurred())
	f.port = int32(n)
	return f
}

// runPod plays the StatefulSet controller and the kubelet for one pod: it exists, Ready,
// at 127.0.0.1 on the given port.
func runPod(ctx context.Context, name, ns string, labels map[string]string, port int32) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port}}}}},
	}
	Eventually(func() error { return k8sClient.Create(ctx, pod) }, timeout, interval).Should(Succeed())
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
	Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
}

var _ = Describe("Autoscaler", func() {
	It("follows a load step up and back down: status, StatefulSet replicas, conditions, events, drain", func() {
		ctx := context.Background()
		ns := newNamespace(ctx)
		idx := newIndex(ns, "hot", 1)
		idx.Spec.Replicas = annv1alpha1.ReplicaRange{Min: 1, Max: 3}
		idx.Spec.Autoscaling = annv1alpha1.AutoscalingSpec{Enabled: true, Metric: annv1alpha1.AutoscalingQPSPerReplica,
			Target: 100, ScaleDownStabilizationSeconds: ptr.To[int32](1)}
		Expect(k8sClient.Create(ctx, idx)).To(Succeed())
		awaitObjects(ctx, expectedObjects(idx, 1))

		load := []*fakeLoad{newFakeLoad(), newFakeLoad()}
		runPod(ctx, "hot-shard-0-0", ns, shardLabels(idx, 0), load[0].port)
		markShardReady(ctx, idx, 0, 1)
		markRouterReady(ctx, idx)

		By("running a router that stops routing to a shard pod once it carries the drain mark")
		var asked atomic.Int64
		router := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			asked.Add(1)
			var eps []shardclient.RouterEndpoint
			var pods corev1.PodList
			Expect(k8sClient.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels(shardLabels(idx, 0)))).To(Succeed())
			for _, p := range pods.Items {
				ord, _ := podOrdinal(shardName(idx, 0), p.Name)
				eps = append(eps, shardclient.RouterEndpoint{Pod: p.Name, Ordinal: int(ord),
					Draining: p.Annotations[shardclient.DrainAnnotation] == "true"})
			}
			_ = json.NewEncoder(w).Encode(shardclient.RouterStatus{Epoch: 1, Shards: []shardclient.RouterShard{{Shard: 0, Endpoints: eps}}})
		}))
		DeferCleanup(router.Close)
		_, rp, _ := net.SplitHostPort(router.Listener.Addr().String())
		rport, _ := strconv.Atoi(rp)
		runPod(ctx, "hot-router-x", ns, componentLabels(idx, componentRouter), int32(rport))

		stsReplicas := func() int32 {
			sts := &appsv1.StatefulSet{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardName(idx, 0)}, sts)).To(Succeed())
			return ptr.Deref(sts.Spec.Replicas, 0)
		}
		shard0 := func() annv1alpha1.ShardStatus {
			st := getIndex(ctx, idx).Status
			if len(st.Shards) == 0 {
				return annv1alpha1.ShardStatus{}
			}
			return st.Shards[0]
		}
		notes := func(reason string) []string {
			var list eventsv1.EventList
			Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			var out []string
			for _, e := range list.Items {
				if e.Regarding.Name == idx.Name && e.Reason == reason {
					out = append(out, e.Note)
				}
			}
			return out
		}
		Eventually(func() string { return conditionOf(ctx, idx, annv1alpha1.ConditionScaling) }, timeout, interval).
			Should(Equal("False/Stable: every shard runs its desired replicas"))

		By("stepping the load up to 150 QPS on one replica, target 100")
		load[0].qps.Store(150)
		Eventually(stsReplicas, timeout, interval).Should(Equal(int32(2)))
		Eventually(shard0, timeout, interval).Should(And(
			HaveField("DesiredReplicas", int32(2)), HaveField("Replicas", int32(2)),
			HaveField("ObservedMetric", Equal(ptr.To[int64](150)))))
		Expect(conditionOf(ctx, idx, annv1alpha1.ConditionScaling)).To(Equal("True/ScalingUp: shard 0: 1 -> 2 replicas, 150 QPS/replica > target 100"))
		Eventually(func() []string { return notes(annv1alpha1.ReasonScalingUp) }, timeout, interval).
			Should(Equal([]string{"shard 0: 1 -> 2 replicas, 150 QPS/replica > target 100"}))

		By("bringing the new replica up; the load spreads over both")
		runPod(ctx, "hot-shard-0-1", ns, shardLabels(idx, 0), load[1].port)
		load[0].qps.Store(75)
		load[1].qps.Store(75)
		markShardReady(ctx, idx, 0, 2)
		Eventually(func() string { return conditionOf(ctx, idx, annv1alpha1.ConditionScaling) }, timeout, interval).
			Should(Equal("False/Stable: every shard runs its desired replicas"))
		Consistently(stsReplicas, 2*time.Second, 100*time.Millisecond).Should(Equal(int32(2)))

		By("stepping the load down: the replica is drained from the router, then removed")
		stepDown := time.Now()
		load[0].qps.Store(5)
		load[1].qps.Store(5)
		// The shard gives a replica back no sooner than scaleDownPeriod after it grew.
		Eventually(stsReplicas, scaleDownPeriod+timeout, interval).Should(Equal(int32(1)))
		GinkgoWriter.Printf("scale-down %.1fs after the step\n", time.Since(stepDown).Seconds())
		victim := &corev1.Pod{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "hot-shard-0-1"}, victim)).To(Succeed())
		Expect(victim.Annotations).To(HaveKeyWithValue(shardclient.DrainAnnotation, "true"),
			"the StatefulSet shrinks only after the pod is out of routing")
		Expect(asked.Load()).To(BeNumerically(">", 0), "the operator asks the router before it shrinks")
		Eventually(func() []string { return notes(annv1alpha1.ReasonScalingDown) }, timeout, interval).
			Should(Equal([]string{"shard 0: 2 -> 1 replicas, 5 QPS/replica < target 100"}))
		Eventually(shard0, timeout, interval).Should(And(
			HaveField("DesiredReplicas", int32(1)), HaveField("ObservedMetric", Equal(ptr.To[int64](5)))))
		Expect(notes(annv1alpha1.ReasonScalingUp)).To(HaveLen(1), "one event per change")
	})
})
