package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/test/e2e/framework"
)

const availableTimeout = 4 * time.Minute

var _ = Describe("AnnIndex", Ordered, func() {
	const name = "e2e"
	const dim = 32
	var (
		routers *framework.Routers
		data    *framework.Dataset
	)

	BeforeAll(func(ctx SpecContext) {
		By("creating a 2 shards x 2 replicas index")
		Expect(cluster.Client.Create(ctx, newIndex(name, dim))).To(Succeed())
		_, err := cluster.WaitHealthy(ctx, objKey(namespace, name), availableTimeout, func(s string) {
			GinkgoWriter.Printf("%s %s\n", time.Now().Format(time.TimeOnly), s)
		})
		Expect(err).NotTo(HaveOccurred())
		routers, err = cluster.Router(ctx, namespace, name)
		Expect(err).NotTo(HaveOccurred())
		data = framework.Generate(3000, 100, dim, 16, 8, 7)
	}, NodeTimeout(availableTimeout+time.Minute))

	It("reports every shard and the router ready, with honest conditions and printer columns", Label("smoke"), func(ctx SpecContext) {
		idx := getIndex(ctx, name)
		Expect(idx.Status.ReadyShards).To(BeEquivalentTo(2))
		Expect(idx.Status.Shards).To(HaveLen(2))
		owned := slotCounts(routingTable(ctx, name))
		for _, s := range idx.Status.Shards {
			Expect(s.ReadyReplicas).To(BeEquivalentTo(2), "shard %d", s.Shard)
			Expect(s.Slots).To(BeEquivalentTo(owned[s.Shard]), "shard %d: status and the routing ConfigMap disagree", s.Shard)
		}
		Expect(idx.Status.RoutingEpoch).To(BeNumerically(">=", 1))
		for _, t := range []string{annv1alpha1.ConditionAvailable, annv1alpha1.ConditionProgressing,
			annv1alpha1.ConditionDegraded, annv1alpha1.ConditionScaling, annv1alpha1.ConditionMigrating} {
			Expect(framework.Condition(idx, t)).NotTo(BeNil(), "condition %s missing", t)
		}
		Expect(framework.Condition(idx, annv1alpha1.ConditionDegraded).Status).To(Equal(metav1.ConditionFalse))

		for k := range 2 {
			pods, err := cluster.Pods(ctx, namespace, name, "shard", k, true)
			Expect(err).NotTo(HaveOccurred())
			Expect(pods).To(HaveLen(2), "ready pods of shard %d", k)
		}

		By("reading the printer columns as kubectl does")
		raw, err := cluster.Kube.Discovery().RESTClient().Get().
			AbsPath("/apis/annshard.io/v1alpha1/namespaces", namespace, "annindexes", name).
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
		Expect(err).NotTo(HaveOccurred())
		var table metav1.Table
		Expect(json.Unmarshal(raw, &table)).To(Succeed())
		var cols []string
		for _, c := range table.ColumnDefinitions {
			cols = append(cols, c.Name)
		}
		Expect(cols).To(ContainElements("Name", "Shards", "Ready", "Vectors", "QPS", "Available", "Age"))
		Expect(table.Rows).To(HaveLen(1))
		cells := map[string]any{}
		for i, c := range table.ColumnDefinitions {
			cells[c.Name] = table.Rows[0].Cells[i]
		}
		Expect(cells["Shards"]).To(BeEquivalentTo(2))
		Expect(cells["Available"]).To(Equal("True"))
	})

	It("stores vectors written through the router and finds them with recall@10 >= 0.95", Label("data"), func(ctx SpecContext) {
		n, err := data.Load(ctx, routers, 250)
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(Equal(len(data.IDs)))

		got, err := getVector(ctx, routers, data.IDs[17], data.Partitions[17])
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Vector).To(HaveLen(dim))

		recall, err := data.MeasureRecall(ctx, routers, 10)
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("recall@10 over %d queries: %.4f\n", len(data.Queries), recall)
		Expect(recall).To(BeNumerically(">=", 0.95))

		By("waiting for the operator to report the vectors in status")
		Eventually(func(g Gomega) {
			idx := &annv1alpha1.AnnIndex{}
			g.Expect(cluster.Client.Get(ctx, objKey(namespace, name), idx)).To(Succeed())
			g.Expect(idx.Status.Vectors).To(BeEquivalentTo(len(data.IDs)))
		}).WithContext(ctx).WithTimeout(time.Minute).Should(Succeed())
	})

	It("answers a partition-scoped query from the owning shard alone", Label("data"), func(ctx SpecContext) {
		const partition = "p3"
		table := routingTable(ctx, name)
		owner := table.ShardOfKey(partition)
		other := 1 - owner
		before := shardQueries(ctx, name, other)
		ownerBefore := shardQueries(ctx, name, owner)

		for i, q := range data.Queries[:20] {
			var resp *client.SearchResponse
			Expect(routers.Do(ctx, func(c *client.Client) (err error) {
				resp, err = c.Search(ctx, &client.SearchRequest{Vector: q, K: 10, Partition: partition})
				return err
			})).To(Succeed())
			Expect(resp.Results).To(HaveLen(10), "query %d", i)
			want := data.Exact(q, 10, partition)
			for _, h := range resp.Results {
				Expect(h.ID).To(BeElementOf(idsOfPartition(data, partition)), "query %d returned %s from another partition", i, h.ID)
			}
			Expect(framework.Recall(resp.Results, want)).To(BeNumerically(">=", 0.8), "query %d", i)
		}
		Expect(shardQueries(ctx, name, other)).To(Equal(before), "shard %d (not the owner) saw partition queries", other)
		Expect(shardQueries(ctx, name, owner)).To(BeNumerically(">=", ownerBefore+20))
	})

	It("loses no query when a replica pod is deleted under load", Label("disruptive"), func(ctx SpecContext) {
		victim := fmt.Sprintf("%s-shard-0-1", name)
		old := podUIDs(ctx, name, "shard")[victim]
		Expect(old).NotTo(BeEmpty())
		load := startQueryLoad(ctx, routers, data.Queries, 4)
		time.Sleep(2 * time.Second)
		Expect(cluster.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: victim, Namespace: namespace}})).To(Succeed())
		waitPodReplaced(ctx, victim, old, 3*time.Minute)
		time.Sleep(2 * time.Second)
		ok, failed, lastErr := load.finish()
		GinkgoWriter.Printf("queries during the replica's replacement: %d answered, %d failed (last error: %v)\n", ok, failed, lastErr)
		Expect(failed).To(BeZero(), "last error: %v", lastErr)
		Expect(ok).To(BeNumerically(">", 50))
	})

	It("keeps acknowledged writes when a primary pod is deleted, and takes writes again", Label("disruptive"), func(ctx SpecContext) {
		extra := framework.Generate(400, 0, dim, 4, 0, 99)
		for i := range extra.IDs {
			extra.IDs[i] = "dur-" + strconv.Itoa(i)
		}
		n, err := extra.Load(ctx, routers, 100)
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(Equal(400))

		for k := range 2 {
			victim := fmt.Sprintf("%s-shard-%d-0", name, k)
			old := podUIDs(ctx, name, "shard")[victim]
			Expect(cluster.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: victim, Namespace: namespace}})).To(Succeed())
			waitPodReplaced(ctx, victim, old, 3*time.Minute)
		}
		_, err = cluster.WaitHealthy(ctx, objKey(namespace, name), availableTimeout, nil)
		Expect(err).NotTo(HaveOccurred())

		By("reading back every acknowledged write")
		for i, id := range extra.IDs {
			v, err := getVector(ctx, routers, id, "")
			Expect(err).NotTo(HaveOccurred(), "acknowledged vector %s lost", id)
			Expect(v.Vector).To(Equal(extra.Vectors[i]))
		}
		By("writing again")
		Eventually(func() error {
			return routers.Do(ctx, func(c *client.Client) error {
				_, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: "after-restart", Vector: extra.Vectors[0]}}})
				return err
			})
		}).WithContext(ctx).WithTimeout(time.Minute).Should(Succeed())
		_, err = getVector(ctx, routers, "after-restart", "")
		Expect(err).NotTo(HaveOccurred())
	})

	It("rolls shards and routers on a spec edit while queries keep succeeding", Label("disruptive"), func(ctx SpecContext) {
		shardsBefore := podUIDs(ctx, name, "shard")
		routersBefore := podUIDs(ctx, name, "router")
		load := startQueryLoad(ctx, routers, data.Queries, 4)

		idx := getIndex(ctx, name)
		patch := ctrlclient.MergeFrom(idx.DeepCopy())
		idx.Spec.HNSW.EfSearch = 96
		idx.Spec.Router.LoadBalancing = "RoundRobin"
		Expect(cluster.Client.Patch(ctx, idx, patch)).To(Succeed())

		Eventually(func(g Gomega) {
			now := podUIDs(ctx, name, "shard")
			for pod, uid := range shardsBefore {
				g.Expect(now[pod]).NotTo(Equal(uid), "shard pod %s not rolled", pod)
			}
			rnow := podUIDs(ctx, name, "router")
			for pod := range routersBefore {
				g.Expect(rnow).NotTo(HaveKey(pod), "router pod %s not replaced", pod)
			}
		}).WithContext(ctx).WithTimeout(5 * time.Minute).WithPolling(time.Second).Should(Succeed())
		_, err := cluster.WaitHealthy(ctx, objKey(namespace, name), availableTimeout, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(routers.Refresh(ctx)).To(Succeed())
		time.Sleep(2 * time.Second)
		ok, failed, lastErr := load.finish()
		GinkgoWriter.Printf("queries during the roll: %d answered, %d failed (last error: %v)\n", ok, failed, lastErr)
		Expect(failed).To(BeZero(), "last error: %v", lastErr)

		var sts appsv1.StatefulSet
		Expect(cluster.Client.Get(ctx, objKey(namespace, name+"-shard-0"), &sts)).To(Succeed())
		Expect(fmt.Sprint(sts.Spec.Template.Spec.Containers[0].Args)).To(ContainSubstring("96"))
	})

	It("is garbage collected with everything it owned when deleted", Label("smoke"), func(ctx SpecContext) {
		Expect(cluster.Client.Delete(ctx, &annv1alpha1.AnnIndex{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}})).To(Succeed())
		sel := ctrlclient.MatchingLabels{"app.kubernetes.io/instance": name}
		lists := map[string]ctrlclient.ObjectList{
			"StatefulSets": &appsv1.StatefulSetList{}, "Deployments": &appsv1.DeploymentList{},
			"Services": &corev1.ServiceList{}, "ConfigMaps": &corev1.ConfigMapList{}, "Secrets": &corev1.SecretList{},
			"ServiceAccounts": &corev1.ServiceAccountList{}, "Roles": &rbacv1.RoleList{}, "RoleBindings": &rbacv1.RoleBindingList{},
			"PodDisruptionBudgets": &policyv1.PodDisruptionBudgetList{}, "Pods": &corev1.PodList{},
		}
		Eventually(func(g Gomega) {
			err := cluster.Client.Get(ctx, objKey(namespace, name), &annv1alpha1.AnnIndex{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "AnnIndex still there")
			for kind, list := range lists {
				g.Expect(cluster.Client.List(ctx, list, inNamespace(namespace), sel)).To(Succeed())
				g.Expect(meta.LenList(list)).To(BeZero(), "%s of %s still there", kind, name)
			}
		}).WithContext(ctx).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
	})
})

var _ = Describe("AnnIndex validation", Label("smoke"), func() {
	It("rejects invalid manifests with the CRD's messages", func(ctx SpecContext) {
		bad := newIndex("bad-replicas", 8)
		bad.Spec.Replicas = annv1alpha1.ReplicaRange{Min: 5, Max: 2}
		err := cluster.Client.Create(ctx, bad)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("replicas.min must be less than or equal to replicas.max"))

		bad = newIndex("bad-shards", 8)
		bad.Spec.Shards = 300
		err = cluster.Client.Create(ctx, bad)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("shards"))

		bad = newIndex("bad-dim", 0)
		Expect(cluster.Client.Create(ctx, bad)).NotTo(Succeed())

		By("refusing to change an immutable field")
		ok := newIndex("immutable", 8)
		ok.Spec.Shards = 1
		ok.Spec.Replicas = annv1alpha1.ReplicaRange{Min: 1, Max: 1}
		Expect(cluster.Client.Create(ctx, ok)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { _ = cluster.Client.Delete(ctx, ok) })
		patch := ctrlclient.MergeFrom(ok.DeepCopy())
		ok.Spec.Dimension = 16
		err = cluster.Client.Patch(ctx, ok, patch)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("dimension is immutable"))
	})
})

func getVector(ctx context.Context, r *framework.Routers, id, partition string) (*client.Vector, error) {
	var v *client.Vector
	err := r.Do(ctx, func(c *client.Client) (err error) {
		v, err = c.Get(ctx, id, partition)
		return err
	})
	return v, err
}

// shardQueries sums the per-slot query counters of every ready pod of one shard.
func shardQueries(ctx context.Context, index string, shard int) uint64 {
	loads, err := cluster.ShardLoad(ctx, namespace, index, shard)
	Expect(err).NotTo(HaveOccurred())
	var n uint64
	for _, l := range loads {
		for _, c := range l.SlotQueries {
			n += c
		}
	}
	return n
}

func idsOfPartition(d *framework.Dataset, p string) []string {
	var out []string
	for i, part := range d.Partitions {
		if part == p {
			out = append(out, d.IDs[i])
		}
	}
	return out
}
