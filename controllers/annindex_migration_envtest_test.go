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
	"fmt"
	"strings"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/kube"
	"github.com/annshard/annshard/shardserver/slots"
)

// envtestShards plays the shard primaries of every index of the envtest suite: one
// fakeWorld per index, which follows the routing ConfigMap the reconciler writes (and
// checks each table change against the handoff rule) and answers only for shards whose
// primary pod is Ready.
var envtestShards = &fakeShardFleet{worlds: map[client.ObjectKey]*fakeWorld{}}

type fakeShardFleet struct {
	mu     sync.Mutex
	worlds map[client.ObjectKey]*fakeWorld
}

func (f *fakeShardFleet) world(ctx context.Context, idx *annv1alpha1.AnnIndex) (*fakeWorld, error) {
	cm := &corev1.ConfigMap{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: idx.Namespace, Name: routingName(idx)}, cm); err != nil {
		return nil, err
	}
	tab, err := slots.Parse([]byte(cm.Data[slots.ConfigMapKey]))
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := client.ObjectKeyFromObject(idx)
	w := f.worlds[key]
	if w == nil {
		w = newFakeWorld(tab)
		f.worlds[key] = w
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if tab.Epoch > w.table.Epoch {
		w.checkTableWrite(tab)
		w.table = tab
		for _, s := range w.shards {
			s.epoch = tab.Epoch
			s.owned = s.owned.Minus(s.owned.Minus(tab.SlotsOf(int(s.k))))
		}
	}
	w.routerAt = w.table.Epoch
	return w, nil
}

func (f *fakeShardFleet) dial(ctx context.Context, idx *annv1alpha1.AnnIndex, k int32) (shardPrimary, error) {
	pod := &corev1.Pod{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: idx.Namespace, Name: shardName(idx, k) + "-0"}, pod); err != nil || !kube.PodReady(pod) {
		return nil, fmt.Errorf("shard %d: %w", k, errPrimaryNotReady)
	}
	w, err := f.world(ctx, idx)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.shards[k] == nil {
		w.addShard(k)
	}
	w.shards[k].seq += 7 // the shard takes writes between calls
	return w.shards[k], nil
}

func (f *fakeShardFleet) violations(idx *annv1alpha1.AnnIndex) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.worlds[client.ObjectKeyFromObject(idx)]
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.violations...)
}

func routingTable(ctx context.Context, idx *annv1alpha1.AnnIndex) slots.Table {
	cm := &corev1.ConfigMap{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: idx.Namespace, Name: routingName(idx)}, cm)).To(Succeed())
	tab, err := slots.Parse([]byte(cm.Data[slots.ConfigMapKey]))
	Expect(err).NotTo(HaveOccurred())
	return tab
}

func slotCounts(tab slots.Table) []int {
	out := make([]int, tab.Shards)
	for k := range out {
		set := tab.SlotsOf(k)
		out[k] = set.Len()
	}
	return out
}

func movePhases(ctx context.Context, idx *annv1alpha1.AnnIndex) string {
	var out []string
	for _, m := range getIndex(ctx, idx).Status.Migrations {
		out = append(out, fmt.Sprintf("%d->%d %s", m.FromShard, m.ToShard, m.Phase))
	}
	return strings.Join(out, ", ")
}

var _ = Describe("AnnIndex resharding", func() {
	It("grows 2 -> 3 once the new shard is ready and shrinks 3 -> 2, removing the emptied shard", func() {
		ctx := context.Background()
		ns := newNamespace(ctx)
		idx := newIndex(ns, "reshard", 2)
		createReady(ctx, idx)
		before := routingTable(ctx, idx)

		By("asking for 3 shards: the new StatefulSet comes first, moves wait for its primary")
		cur := getIndex(ctx, idx)
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.Shards = 3
		Expect(k8sClient.Patch(ctx, cur, patch)).To(Succeed())
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardName(idx, 2)}, &appsv1.StatefulSet{})
		}, timeout, interval).Should(Succeed())
		Eventually(func() string { return movePhases(ctx, idx) }, timeout, interval).Should(Equal("0->2 Pending, 1->2 Pending"))
		Expect(conditionOf(ctx, idx, annv1alpha1.ConditionMigrating)).To(HavePrefix("True/MigrationInProgress"))
		Consistently(func() uint64 { return routingTable(ctx, idx).Epoch }, "1s", interval).Should(Equal(before.Epoch),
			"no slot moves before the new shard is ready")
		Expect(getIndex(ctx, idx).Status.ActiveMigrations).To(BeEquivalentTo(2))

		By("the new shard's primary becoming ready")
		markShardReady(ctx, idx, 2, 1)
		Eventually(func() string { return movePhases(ctx, idx) }, timeout, interval).Should(Equal("0->2 Done, 1->2 Done"))
		tab := routingTable(ctx, idx)
		Expect(slotCounts(tab)).To(Equal([]int{1366, 1365, 1365}))
		Expect(tab.Epoch).To(Equal(before.Epoch+2), "one epoch per handoff")
		Expect(envtestShards.violations(idx)).To(BeEmpty())
		Eventually(func() string { return conditionOf(ctx, idx, annv1alpha1.ConditionMigrating) }, timeout, interval).
			Should(HavePrefix("False/NoMigration"))
		st := getIndex(ctx, idx).Status
		Expect(st.PendingShards).To(BeZero())
		Expect(st.Shards).To(HaveLen(3))
		Expect(st.ActiveMigrations).To(BeZero())
		Expect(st.RoutingEpoch).To(BeEquivalentTo(tab.Epoch))

		By("asking for 2 shards again: shard 2's slots go back, then the table and the StatefulSet drop it")
		cur = getIndex(ctx, idx)
		patch = client.MergeFrom(cur.DeepCopy())
		cur.Spec.Shards = 2
		Expect(k8sClient.Patch(ctx, cur, patch)).To(Succeed())
		Eventually(func() int { return routingTable(ctx, idx).Shards }, timeout, interval).Should(Equal(2))
		Expect(slotCounts(routingTable(ctx, idx))).To(Equal([]int{2048, 2048}))
		Eventually(func() bool {
			sts := &appsv1.StatefulSet{}
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardName(idx, 2)}, sts)
			return apierrors.IsNotFound(err) || (err == nil && sts.DeletionTimestamp != nil)
		}, timeout, interval).Should(BeTrue(), "the emptied shard's StatefulSet is removed")
		Expect(envtestShards.violations(idx)).To(BeEmpty())
		for k := range int32(2) {
			sts := &appsv1.StatefulSet{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardName(idx, k)}, sts)).To(Succeed())
			Expect(sts.DeletionTimestamp).To(BeNil())
		}
		Eventually(func() string { return conditionOf(ctx, idx, annv1alpha1.ConditionMigrating) }, timeout, interval).
			Should(HavePrefix("False/NoMigration"))
	})

	It("writes the routing table only over the version it was read at, keeping the rest of the ConfigMap", func() {
		ctx := context.Background()
		idx := newIndex(newNamespace(ctx), "tablewrite", 2)
		Expect(k8sClient.Create(ctx, idx)).To(Succeed())
		awaitObjects(ctx, []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: idx.Namespace, Name: routingName(idx)}}})
		r := &AnnIndexReconciler{Client: k8sClient, Scheme: testScheme}
		tab, read, err := r.readRoutingTable(ctx, idx)
		Expect(err).NotTo(HaveOccurred())

		next := tab
		next.Move(slots.Range(0, 9), 1)
		Expect(r.writeRoutingTable(ctx, idx, next, read.ResourceVersion)).To(Succeed())
		got, written, err := r.readRoutingTable(ctx, idx)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(next))
		Expect(written.Labels).To(Equal(read.Labels))
		Expect(written.OwnerReferences).To(Equal(read.OwnerReferences))

		By("refusing a write over the version read before the last one")
		stale := tab
		stale.Move(slots.Range(10, 19), 1)
		Expect(r.writeRoutingTable(ctx, idx, stale, read.ResourceVersion)).To(MatchError(errTableConflict))
		got, _, err = r.readRoutingTable(ctx, idx)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(next))
	})
})
