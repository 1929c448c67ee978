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
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	shardclient "github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

const (
	timeout  = 20 * time.Second
	interval = 50 * time.Millisecond
)

func newNamespace(ctx context.Context) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "annshard-test-"}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func newIndex(ns, name string, shards int32) *annv1alpha1.AnnIndex {
	return &annv1alpha1.AnnIndex{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       annv1alpha1.AnnIndexSpec{Dimension: 16, Shards: shards},
	}
}

func key(o client.Object) client.ObjectKey { return client.ObjectKeyFromObject(o) }

// expectedObjects are the objects the reconciler must create for idx, empty but named.
func expectedObjects(idx *annv1alpha1.AnnIndex, shards int32) []client.Object {
	m := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: idx.Namespace} }
	objs := []client.Object{
		&corev1.Secret{ObjectMeta: m(tokenSecretName(idx))},
		&corev1.ConfigMap{ObjectMeta: m(routingName(idx))},
		&appsv1.Deployment{ObjectMeta: m(routerName(idx))},
		&corev1.Service{ObjectMeta: m(routerName(idx))},
	}
	for _, c := range []string{componentShard, componentRouter} {
		objs = append(objs,
			&corev1.ServiceAccount{ObjectMeta: m(serviceAccountName(idx, c))},
			&rbacv1.Role{ObjectMeta: m(serviceAccountName(idx, c))},
			&rbacv1.RoleBinding{ObjectMeta: m(serviceAccountName(idx, c))})
	}
	for k := range shards {
		objs = append(objs,
			&corev1.Service{ObjectMeta: m(shardName(idx, k))},
			&appsv1.StatefulSet{ObjectMeta: m(shardName(idx, k))},
			&policyv1.PodDisruptionBudget{ObjectMeta: m(shardName(idx, k))})
	}
	return objs
}

// resourceVersions reads every object and returns kind/name -> resourceVersion.
func resourceVersions(ctx context.Context, objs []client.Object) map[string]string {
	out := map[string]string{}
	for _, o := range objs {
		ExpectWithOffset(1, k8sClient.Get(ctx, key(o), o)).To(Succeed())
		out[fmt.Sprintf("%T/%s", o, o.GetName())] = o.GetResourceVersion()
	}
	return out
}

// awaitObjects waits until every object exists and reads it into o.
func awaitObjects(ctx context.Context, objs []client.Object) {
	EventuallyWithOffset(1, func() error {
		for _, o := range objs {
			if err := k8sClient.Get(ctx, key(o), o); err != nil {
				return err
			}
		}
		return nil
	}, timeout, interval).Should(Succeed())
}

func getIndex(ctx context.Context, idx *annv1alpha1.AnnIndex) *annv1alpha1.AnnIndex {
	out := &annv1alpha1.AnnIndex{}
	ExpectWithOffset(1, k8sClient.Get(ctx, key(idx), out)).To(Succeed())
	return out
}

// conditionOf returns "Status/Reason: message" of a condition, for readable matchers.
func conditionOf(ctx context.Context, idx *annv1alpha1.AnnIndex, t string) string {
	c := meta.FindStatusCondition(getIndex(ctx, idx).Status.Conditions, t)
	if c == nil {
		return "absent"
	}
	return fmt.Sprintf("%s/%s: %s", c.Status, c.Reason, c.Message)
}

// markShardReady plays the StatefulSet controller and the kubelet: shard k's StatefulSet
// reports ready of its replicas ready and rolled out, and its primary pod is Ready.
func markShardReady(ctx context.Context, idx *annv1alpha1.AnnIndex, k int32, ready int32) {
	sts := &appsv1.StatefulSet{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: idx.Namespace, Name: shardName(idx, k)}, sts)).To(Succeed())
	want := ptr.Deref(sts.Spec.Replicas, 1)
	sts.Status = appsv1.StatefulSetStatus{
		ObservedGeneration: sts.Generation,
		Replicas:           want, ReadyReplicas: ready, AvailableReplicas: ready,
		CurrentReplicas: want, UpdatedReplicas: want,
		CurrentRevision: "r1", UpdateRevision: "r1",
	}
	Expect(k8sClient.Status().Update(ctx, sts)).To(Succeed())

	pod := &corev1.Pod{}
	podKey := client.ObjectKey{Namespace: idx.Namespace, Name: shardName(idx, k) + "-0"}
	if err := k8sClient.Get(ctx, podKey, pod); err != nil {
		pod = &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: podKey.Name, Namespace: podKey.Namespace, Labels: shardLabels(idx, k)},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "shardserver", Image: "x"}}},
		}
		Expect(k8sClient.Create(ctx, pod)).To(Succeed())
	}
	status := corev1.ConditionFalse
	if ready > 0 {
		status = corev1.ConditionTrue
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
}

// markRouterReady plays the Deployment controller: every router replica is ready.
func markRouterReady(ctx context.Context, idx *annv1alpha1.AnnIndex) {
	d := &appsv1.Deployment{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: idx.Namespace, Name: routerName(idx)}, d)).To(Succeed())
	n := ptr.Deref(d.Spec.Replicas, 1)
	d.Status = appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
	}
	Expect(k8sClient.Status().Update(ctx, d)).To(Succeed())
}

// createReady creates idx and drives it to Available.
func createReady(ctx context.Context, idx *annv1alpha1.AnnIndex) {
	Expect(k8sClient.Create(ctx, idx)).To(Succeed())
	objs := expectedObjects(idx, idx.Spec.Shards)
	awaitObjects(ctx, objs)
	for k := range idx.Spec.Shards {
		markShardReady(ctx, idx, k, max(idx.Spec.Replicas.Min, 1))
	}
	markRouterReady(ctx, idx)
	Eventually(func() string { return conditionOf(ctx, idx, annv1alpha1.ConditionAvailable) }, timeout, interval).
		Should(HavePrefix("True/"))
}

func shardTemplateHash(ctx context.Context, idx *annv1alpha1.AnnIndex, k int32) string {
	sts := &appsv1.StatefulSet{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: idx.Namespace, Name: shardName(idx, k)}, sts)).To(Succeed())
	return sts.Spec.Template.Annotations[annotationConfigHash]
}

var _ = Describe("AnnIndex reconciler", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		ns = newNamespace(ctx)
	})

	It("creates every object, labelled and owned by the index", func() {
		idx := newIndex(ns, "products", 2)
		Expect(k8sClient.Create(ctx, idx)).To(Succeed())
		objs := expectedObjects(idx, 2)
		awaitObjects(ctx, objs)
		idx = getIndex(ctx, idx)
		for _, o := range objs {
			Expect(metav1.IsControlledBy(o, idx)).To(BeTrue(), "%T %s has no controller reference to the index", o, o.GetName())
			Expect(o.GetLabels()).To(HaveKeyWithValue(labelManagedBy, managedBy), "%T %s", o, o.GetName())
			Expect(o.GetLabels()).To(HaveKeyWithValue(labelInstance, "products"), "%T %s", o, o.GetName())
			Expect(o.GetLabels()).To(HaveKeyWithValue(labelName, appName), "%T %s", o, o.GetName())
		}

		cm := &corev1.ConfigMap{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "products-routing"}, cm)).To(Succeed())
		table, err := slots.Parse([]byte(cm.Data[slots.ConfigMapKey]))
		Expect(err).NotTo(HaveOccurred())
		Expect(table).To(Equal(slots.Even(2)))

		sec := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "products-token"}, sec)).To(Succeed())
		Expect(sec.Data[tokenKey]).To(HaveLen(2 * tokenBytes))

		sts := &appsv1.StatefulSet{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "products-shard-1"}, sts)).To(Succeed())
		Expect(sts.Labels).To(HaveKeyWithValue(labelShard, "1"))
		Expect(sts.Spec.Template.Spec.Containers[0].Args).To(ContainElements("--shard-index=1", "--pod-name=$(POD_NAME)", "--dimension=16", "--metric=L2", "--ef-search=64"))
		Expect(*sts.Spec.Replicas).To(Equal(int32(1)))

		Eventually(func() []metav1.Condition { return getIndex(ctx, idx).Status.Conditions }, timeout, interval).
			Should(HaveLen(5))
		got := getIndex(ctx, idx).Status
		Expect(got.RoutingEpoch).To(Equal(int64(1)))
		Expect(got.Shards).To(HaveLen(2))
		Expect(got.Shards[0].Slots + got.Shards[1].Slots).To(Equal(int32(slots.Count)))
	})

	It("follows StatefulSet, Deployment and Pod statuses through Progressing, Available and Degraded", func() {
		idx := newIndex(ns, "status", 2)
		idx.Spec.Replicas = annv1alpha1.ReplicaRange{Min: 3, Max: 3}
		Expect(k8sClient.Create(ctx, idx)).To(Succeed())
		Eventually(func() string { return conditionOf(ctx, idx, annv1alpha1.ConditionProgressing) }, timeout, interval).
			Should(HavePrefix("True/RollingUpdate: shard 0: rollout of generation 1 not yet observed"))
		Expect(conditionOf(ctx, idx, annv1alpha1.ConditionAvailable)).To(HavePrefix("False/ShardUnavailable: shard 0: primary status-shard-0-0 not ready"))

		markShardReady(ctx, idx, 0, 3)
		markShardReady(ctx, idx, 1, 1)
		// The pods reach the operator's cache after the StatefulSets, so every condition
		// is awaited rather than read once.
		cond := func(t string) func() string { return func() string { return conditionOf(ctx, idx, t) } }
		Eventually(cond(annv1alpha1.ConditionDegraded), timeout, interval).
			Should(Equal("True/ReplicasUnready: shard 1: 1/3 replicas ready"))
		Eventually(cond(annv1alpha1.ConditionAvailable), timeout, interval).
			Should(Equal("False/RouterUnavailable: router: 0/2 replicas ready"))
		Eventually(cond(annv1alpha1.ConditionProgressing), timeout, interval).Should(HavePrefix("True/RollingUpdate: router:"))

		markRouterReady(ctx, idx)
		Eventually(cond(annv1alpha1.ConditionAvailable), timeout, interval).Should(HavePrefix("True/Available"))
		// Progressing stays True until every replica of the spec is ready.
		Eventually(cond(annv1alpha1.ConditionProgressing), timeout, interval).
			Should(Equal("True/ScalingReplicas: shard 1: 1/3 replicas ready"))
		Expect(conditionOf(ctx, idx, annv1alpha1.ConditionDegraded)).To(HavePrefix("True/ReplicasUnready"))

		markShardReady(ctx, idx, 1, 3)
		Eventually(func() string { return conditionOf(ctx, idx, annv1alpha1.ConditionDegraded) }, timeout, interval).
			Should(HavePrefix("False/AsExpected"))
		Eventually(cond(annv1alpha1.ConditionProgressing), timeout, interval).Should(HavePrefix("False/Reconciled"))
		got := getIndex(ctx, idx)
		Expect(got.Status.ReadyShards).To(Equal(int32(2)))
		Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		Expect(got.Status.Shards).To(ConsistOf(
			annv1alpha1.ShardStatus{Shard: 0, Replicas: 3, ReadyReplicas: 3, DesiredReplicas: 3, Slots: 2048},
			annv1alpha1.ShardStatus{Shard: 1, Replicas: 3, ReadyReplicas: 3, DesiredReplicas: 3, Slots: 2048},
		))
		Expect(conditionOf(ctx, idx, annv1alpha1.ConditionScaling)).To(HavePrefix("False/AutoscalingDisabled"))
		Expect(conditionOf(ctx, idx, annv1alpha1.ConditionMigrating)).To(HavePrefix("False/NoMigration"))

		By("losing the primary of shard 1")
		markShardReady(ctx, idx, 1, 0)
		Eventually(func() string { return conditionOf(ctx, idx, annv1alpha1.ConditionAvailable) }, timeout, interval).
			Should(Equal("False/ShardUnavailable: shard 1: primary status-shard-1-0 not ready"))

		By("reporting each transition once as an event")
		reasons := func() []string {
			var list eventsv1.EventList
			Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			var out []string
			for _, e := range list.Items {
				if e.Regarding.Name == "status" {
					out = append(out, e.Type+"/"+e.Reason)
				}
			}
			return out
		}
		Eventually(reasons, timeout, interval).Should(ContainElements(
			"Warning/ShardUnavailable", "Warning/ReplicasUnready", "Normal/Available", "Normal/AsExpected"))
		Expect(reasons()).To(HaveEach(Not(Equal("Warning/Pending"))))
	})

	It("rolls the shards when pod settings change and the router when its settings change", func() {
		idx := newIndex(ns, "roll", 1)
		createReady(ctx, idx)
		shardHash := shardTemplateHash(ctx, idx, 0)
		d := &appsv1.Deployment{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "roll-router"}, d)).To(Succeed())
		routerHash := d.Spec.Template.Annotations[annotationConfigHash]

		cur := getIndex(ctx, idx)
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.HNSW.EfSearch = 128
		cur.Spec.ShardServer.Image = "annshard/shardserver:v0.2.0"
		Expect(k8sClient.Patch(ctx, cur, patch)).To(Succeed())
		Eventually(func() string { return shardTemplateHash(ctx, idx, 0) }, timeout, interval).ShouldNot(Equal(shardHash))
		sts := &appsv1.StatefulSet{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "roll-shard-0"}, sts)).To(Succeed())
		Expect(sts.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--ef-search=128"))
		Expect(sts.Spec.Template.Spec.Containers[0].Image).To(Equal("annshard/shardserver:v0.2.0"))
		Eventually(func() string { return conditionOf(ctx, idx, annv1alpha1.ConditionProgressing) }, timeout, interval).
			Should(HavePrefix("True/RollingUpdate: shard 0: rollout of generation 2 not yet observed"))

		Eventually(func() string {
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "roll-router"}, d)).To(Succeed())
			return d.Spec.Template.Annotations[annotationConfigHash]
		}, timeout, interval).ShouldNot(Equal(routerHash))

		By("scaling the routers, which must not restart them")
		routerHash = d.Spec.Template.Annotations[annotationConfigHash]
		cur = getIndex(ctx, idx)
		patch = client.MergeFrom(cur.DeepCopy())
		cur.Spec.Router.Replicas = 4
		Expect(k8sClient.Patch(ctx, cur, patch)).To(Succeed())
		Eventually(func() int32 {
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "roll-router"}, d)).To(Succeed())
			return *d.Spec.Replicas
		}, timeout, interval).Should(Equal(int32(4)))
		Expect(d.Spec.Template.Annotations[annotationConfigHash]).To(Equal(routerHash))
	})

	It("keeps the token Secret across reconciles and edits of unrelated fields", func() {
		idx := newIndex(ns, "token", 1)
		createReady(ctx, idx)
		sec := &corev1.Secret{}
		secKey := client.ObjectKey{Namespace: ns, Name: "token-token"}
		Expect(k8sClient.Get(ctx, secKey, sec)).To(Succeed())
		token := string(sec.Data[tokenKey])
		Expect(token).To(MatchRegexp("^[0-9a-f]{64}$"))

		By("removing its labels, which hides it from the operator's cache, and adding an unrelated key")
		secPatch := client.MergeFrom(sec.DeepCopy())
		delete(sec.Labels, labelComponent)
		delete(sec.Labels, labelManagedBy)
		sec.Data["extra"] = []byte("kept")
		Expect(k8sClient.Patch(ctx, sec, secPatch)).To(Succeed())
		Eventually(func() map[string]string {
			Expect(k8sClient.Get(ctx, secKey, sec)).To(Succeed())
			return sec.Labels
		}, timeout, interval).Should(And(HaveKeyWithValue(labelComponent, "token"), HaveKeyWithValue(labelManagedBy, managedBy)))
		Expect(string(sec.Data[tokenKey])).To(Equal(token))
		Expect(string(sec.Data["extra"])).To(Equal("kept"))

		By("editing the spec, which reconciles again")
		cur := getIndex(ctx, idx)
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.HNSW.EfSearch = 99
		Expect(k8sClient.Patch(ctx, cur, patch)).To(Succeed())
		Eventually(func() int64 { return getIndex(ctx, idx).Status.ObservedGeneration }, timeout, interval).Should(Equal(cur.Generation))
		Expect(k8sClient.Get(ctx, secKey, sec)).To(Succeed())
		Expect(string(sec.Data[tokenKey])).To(Equal(token))
	})

	It("keeps the replicas the StatefulSets run when the status is lost", func() {
		idx := newIndex(ns, "restored", 2)
		idx.Spec.Replicas = annv1alpha1.ReplicaRange{Min: 3, Max: 4}
		idx.Spec.Autoscaling = annv1alpha1.AutoscalingSpec{Enabled: true, Metric: annv1alpha1.AutoscalingQPSPerReplica, Target: 100}
		createReady(ctx, idx)
		stsReplicas := func(k int32) int32 {
			sts := &appsv1.StatefulSet{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardName(idx, k)}, sts)).To(Succeed())
			return ptr.Deref(sts.Spec.Replicas, 0)
		}
		Expect(stsReplicas(0)).To(Equal(int32(3)))

		By("lowering replicas.min, which leaves running replicas to the autoscaler")
		cur := getIndex(ctx, idx)
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.Replicas.Min = 1
		Expect(k8sClient.Patch(ctx, cur, patch)).To(Succeed())
		Eventually(func() int64 { return getIndex(ctx, idx).Status.ObservedGeneration }, timeout, interval).Should(Equal(cur.Generation))

		By("emptying the status, as a restore from a backup would")
		cur = getIndex(ctx, idx)
		cur.Status = annv1alpha1.AnnIndexStatus{}
		Expect(k8sClient.Status().Update(ctx, cur)).To(Succeed())
		By("reconciling again, as any change to an owned object does")
		Expect(k8sClient.Delete(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: shardName(idx, 0)}})).To(Succeed())
		Eventually(func() []annv1alpha1.ShardStatus { return getIndex(ctx, idx).Status.Shards }, timeout, interval).Should(HaveLen(2))
		Consistently(func() []int32 { return []int32{stsReplicas(0), stsReplicas(1)} }, time.Second, 100*time.Millisecond).
			Should(Equal([]int32{3, 3}))
		for _, sh := range getIndex(ctx, idx).Status.Shards {
			Expect(sh.Replicas).To(Equal(int32(3)), "shard %d", sh.Shard)
		}
	})

	It("rebuilds a lost initial routing table and refuses to guess one that has changed", func() {
		idx := newIndex(ns, "lost", 2)
		createReady(ctx, idx)
		cmKey := client.ObjectKey{Namespace: ns, Name: "lost-routing"}
		cm := &corev1.ConfigMap{}
		Expect(k8sClient.Get(ctx, cmKey, cm)).To(Succeed())
		Expect(k8sClient.Delete(ctx, cm)).To(Succeed())
		Eventually(func() (slots.Table, error) {
			got := &corev1.ConfigMap{}
			if err := k8sClient.Get(ctx, cmKey, got); err != nil {
				return slots.Table{}, err
			}
			return slots.Parse([]byte(got.Data[slots.ConfigMapKey]))
		}, timeout, interval).Should(Equal(slots.Even(2)))

		By("moving slots as the migration executor would, then losing the table")
		Expect(k8sClient.Get(ctx, cmKey, cm)).To(Succeed())
		cmPatch := client.MergeFrom(cm.DeepCopy())
		moved := slots.Even(2)
		moved.Move(slots.Range(0, 9), 1)
		b, err := json.Marshal(moved)
		Expect(err).NotTo(HaveOccurred())
		cm.Data[slots.ConfigMapKey] = string(b)
		Expect(k8sClient.Patch(ctx, cm, cmPatch)).To(Succeed())
		Eventually(func() int64 { return getIndex(ctx, idx).Status.RoutingEpoch }, timeout, interval).Should(Equal(int64(2)))
		Expect(k8sClient.Delete(ctx, cm)).To(Succeed())
		Eventually(func() string { return conditionOf(ctx, idx, annv1alpha1.ConditionDegraded) }, timeout, interval).
			Should(ContainSubstring("True/ReconcileFailed: reconciling routing ConfigMap lost-routing: routing table lost"))
		Consistently(func() error { return k8sClient.Get(ctx, cmKey, &corev1.ConfigMap{}) }, time.Second, 100*time.Millisecond).
			ShouldNot(Succeed())
	})

	It("is idempotent: a second reconcile writes nothing", func() {
		idx := newIndex(ns, "idem", 2)
		createReady(ctx, idx)
		objs := append(expectedObjects(idx, 2), &annv1alpha1.AnnIndex{ObjectMeta: idx.ObjectMeta})
		r := &AnnIndexReconciler{Client: k8sClient, Scheme: testScheme}
		req := ctrl.Request{NamespacedName: key(idx)}
		_, err := r.Reconcile(ctx, req)
		Expect(err).NotTo(HaveOccurred())
		before := resourceVersions(ctx, objs)
		for range 2 {
			_, err := r.Reconcile(ctx, req)
			Expect(err).NotTo(HaveOccurred())
		}
		Expect(resourceVersions(ctx, objs)).To(Equal(before))
	})

	It("writes the load the shard pods report into status", func() {
		report := shardclient.LoadReport{Vectors: 1234, QPS10s: 56.4, LatencyP99Ms: 3.2}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode(report)
		}))
		DeferCleanup(srv.Close)
		_, portText, err := net.SplitHostPort(srv.Listener.Addr().String())
		Expect(err).NotTo(HaveOccurred())
		port, err := strconv.Atoi(portText)
		Expect(err).NotTo(HaveOccurred())

		idx := newIndex(ns, "loaded", 1)
		createReady(ctx, idx)
		By("giving the primary an IP and the fake server's port, as the kubelet would")
		pod := &corev1.Pod{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "loaded-shard-0-0"}, pod)).To(Succeed())
		Expect(k8sClient.Delete(ctx, pod, client.GracePeriodSeconds(0))).To(Succeed())
		pod = &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "loaded-shard-0-0", Namespace: ns, Labels: shardLabels(idx, 0)},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "shardserver", Image: "x",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}}}}},
		}
		Eventually(func() error { return k8sClient.Create(ctx, pod) }, timeout, interval).Should(Succeed())
		pod.Status = corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		}
		Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())

		Eventually(func() []annv1alpha1.ShardStatus { return getIndex(ctx, idx).Status.Shards }, timeout, interval).
			Should(Equal([]annv1alpha1.ShardStatus{{Shard: 0, Replicas: 1, ReadyReplicas: 1, DesiredReplicas: 1, Slots: slots.Count, Vectors: 1234, QPS: 56, P99Millis: 4}}))
		got := getIndex(ctx, idx).Status
		Expect(got.Vectors).To(Equal(int64(1234)))
		Expect(got.QPS).To(Equal(int64(56)))
	})

	DescribeTable("rejects invalid specs with the CEL rule's message",
		func(mutate func(*annv1alpha1.AnnIndex), onUpdate bool, message string) {
			idx := newIndex(ns, "cel", 1)
			if !onUpdate {
				mutate(idx)
				err := k8sClient.Create(ctx, idx)
				Expect(err).To(HaveOccurred())
				Expect(err.Error()).To(ContainSubstring(message))
				return
			}
			Expect(k8sClient.Create(ctx, idx)).To(Succeed())
			// A merge patch carries no resourceVersion, so the operator's concurrent status
			// writes cannot turn the expected rejection into a conflict.
			cur := getIndex(ctx, idx)
			patch := client.MergeFrom(cur.DeepCopy())
			mutate(cur)
			err := k8sClient.Patch(ctx, cur, patch)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(message))
		},
		Entry("replicas.min above replicas.max", func(i *annv1alpha1.AnnIndex) { i.Spec.Replicas = annv1alpha1.ReplicaRange{Min: 4, Max: 2} },
			false, "replicas.min must be less than or equal to replicas.max"),
		Entry("zero shards", func(i *annv1alpha1.AnnIndex) { i.Spec.Shards = -1 }, false, "shards must be between 1 and 256"),
		Entry("too many shards", func(i *annv1alpha1.AnnIndex) { i.Spec.Shards = annv1alpha1.MaxShards + 1 }, false, "shards must be between 1 and 256"),
		// A typed client omits a zero target (the default applies), so the spec sends a
		// negative one; config/samples/invalid/autoscaling-target-zero.yaml sends 0.
		Entry("autoscaling target below 1", func(i *annv1alpha1.AnnIndex) {
			i.Spec.Autoscaling = annv1alpha1.AutoscalingSpec{Enabled: true, Target: -1}
		},
			false, "autoscaling.target must be greater than 0"),
		Entry("dimension changed", func(i *annv1alpha1.AnnIndex) { i.Spec.Dimension = 32 }, true, "dimension is immutable"),
		Entry("metric changed", func(i *annv1alpha1.AnnIndex) { i.Spec.Metric = annv1alpha1.MetricCosine }, true, "metric is immutable"),
		Entry("storage changed", func(i *annv1alpha1.AnnIndex) { i.Spec.ShardServer.Storage.Size = ptr.To(resource.MustParse("20Gi")) },
			true, "shardServer.storage is immutable"),
	)

	It("accepts config/samples and rejects config/samples/invalid with CEL's message", func() {
		files, err := filepath.Glob(filepath.Join("..", "config", "samples", "*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(files).NotTo(BeEmpty())
		for _, f := range files {
			idx := readSample(f)
			idx.SetNamespace(ns)
			Expect(k8sClient.Create(ctx, idx)).To(Succeed(), f)
		}
		bad, err := filepath.Glob(filepath.Join("..", "config", "samples", "invalid", "*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(bad).NotTo(BeEmpty())
		for _, f := range bad {
			idx := readSample(f)
			idx.SetNamespace(ns)
			err := k8sClient.Create(ctx, idx)
			Expect(err).To(HaveOccurred(), f)
			Expect(err.Error()).To(ContainSubstring(expectedRejection(f)), f)
		}
	})

	It("accepts config/samples and rejects an invalid sample through kubectl apply", func() {
		kubectl := os.Getenv("KUBECTL")
		if kubectl == "" {
			Skip("KUBECTL is unset; `make test-envtest` sets it to bin/k8s/<version>/kubectl")
		}
		user, err := testEnv.AddUser(envtest.User{Name: "kubectl-admin", Groups: []string{"system:masters"}}, nil)
		Expect(err).NotTo(HaveOccurred())
		kc, err := user.KubeConfig()
		Expect(err).NotTo(HaveOccurred())
		kubeconfig := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		Expect(os.WriteFile(kubeconfig, kc, 0o600)).To(Succeed())
		run := func(namespace string, args ...string) (string, error) {
			var out bytes.Buffer
			cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig, "-n", namespace}, args...)...)
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			return out.String(), err
		}
		out, err := run(ns, "apply", "-f", filepath.Join("..", "config", "samples"))
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("annindex.annshard.io/products created"))
		bad := filepath.Join("..", "config", "samples", "invalid", "replicas-min-above-max.yaml")
		out, err = run(ns, "apply", "-f", bad)
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring(expectedRejection(bad)))
		out, err = run(ns, "get", "annidx", "products", "-o", "json")
		Expect(err).NotTo(HaveOccurred(), out)
		var got annv1alpha1.AnnIndex
		Expect(json.Unmarshal([]byte(out), &got)).To(Succeed())
		Expect(got.Spec.Shards).To(Equal(int32(2)))

		out, err = run(ns, "get", "annidx", "products")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(strings.Fields(strings.SplitN(out, "\n", 2)[0])).To(Equal([]string{"NAME", "SHARDS", "READY", "VECTORS", "QPS", "EPOCH", "MOVES", "MIGRATION", "AVAILABLE", "AGE"}))

		By("installing the operator's own manifests (config/default)")
		out, err = run("annshard-system", "apply", "--server-side", "--force-conflicts", "-k", filepath.Join("..", "config", "default"))
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("deployment.apps/annshard-controller-manager serverside-applied"))
	})
})

// readSample decodes an AnnIndex manifest: strictly into the typed API, so a misspelt
// field fails the test, and as unstructured, which is what is sent, so that explicit zero
// values reach the API server as kubectl would send them.
func readSample(path string) *unstructured.Unstructured {
	b, err := os.ReadFile(path)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	ExpectWithOffset(1, yaml.UnmarshalStrict(b, &annv1alpha1.AnnIndex{})).To(Succeed(), path)
	u := &unstructured.Unstructured{}
	ExpectWithOffset(1, yaml.Unmarshal(b, &u.Object)).To(Succeed(), path)
	return u
}

// expectedRejection is the message an invalid sample names in its "# expect:" line.
func expectedRejection(path string) string {
	b, err := os.ReadFile(path)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	for _, line := range strings.Split(string(b), "\n") {
		if msg, ok := strings.CutPrefix(line, "# expect: "); ok {
			return strings.TrimSpace(msg)
		}
	}
	Fail(path + " has no '# expect: <message>' line")
	return ""
}
