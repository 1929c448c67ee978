package e2e

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
	"github.com/annshard/annshard/test/e2e/framework"
)

func objKey(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

func inNamespace(ns string) ctrlclient.InNamespace { return ctrlclient.InNamespace(ns) }

// newIndex is a small index the local cluster can run: 2 shards x 2 replicas.
func newIndex(name string, dim int32) *annv1alpha1.AnnIndex {
	return &annv1alpha1.AnnIndex{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: annv1alpha1.AnnIndexSpec{
			Dimension: dim,
			Metric:    "L2",
			Shards:    2,
			Replicas:  annv1alpha1.ReplicaRange{Min: 2, Max: 4},
			HNSW:      annv1alpha1.HNSWSpec{M: 16, EfConstruction: 100, EfSearch: 64},
			ShardServer: annv1alpha1.ShardServerSpec{
				Image:   shardImage,
				Storage: annv1alpha1.StorageSpec{Size: ptr.To(resource.MustParse("1Gi"))},
				WALSync: "Always",
			},
			Router: annv1alpha1.RouterSpec{Replicas: 1, LoadBalancing: "Adaptive"},
		},
	}
}

// queryLoad runs searches from a few goroutines until stopped, counting answers and failures.
type queryLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	lastErr    error
	stop       context.CancelFunc
	wg         sync.WaitGroup
}

func startQueryLoad(ctx context.Context, r *framework.Routers, queries [][]float32, workers int) *queryLoad {
	ctx, cancel := context.WithCancel(ctx)
	l := &queryLoad{stop: cancel}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := w; ctx.Err() == nil; i += workers {
				q := queries[i%len(queries)]
				err := r.Do(ctx, func(c *client.Client) error {
					_, err := c.Search(ctx, &client.SearchRequest{Vector: q, K: 10})
					return err
				})
				switch {
				case ctx.Err() != nil:
				case err != nil:
					l.failed.Add(1)
					l.mu.Lock()
					l.lastErr = err
					l.mu.Unlock()
				default:
					l.ok.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return l
}

// finish stops the load and returns (answered, failed, last error).
func (l *queryLoad) finish() (int64, int64, error) {
	l.stop()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok.Load(), l.failed.Load(), l.lastErr
}

// getIndex reads the AnnIndex named index from the test namespace.
func getIndex(ctx context.Context, index string) *annv1alpha1.AnnIndex {
	idx := &annv1alpha1.AnnIndex{}
	Expect(cluster.Client.Get(ctx, objKey(namespace, index), idx)).To(Succeed())
	return idx
}

// operatorPods lists the operator's pods; it fails the spec if there is none.
func operatorPods(ctx context.Context) []corev1.Pod {
	var pods corev1.PodList
	Expect(cluster.Client.List(ctx, &pods, inNamespace(releaseNamespace),
		ctrlclient.MatchingLabels{"app.kubernetes.io/component": "operator"})).To(Succeed())
	Expect(pods.Items).NotTo(BeEmpty(), "no operator pod in %s", releaseNamespace)
	return pods.Items
}

// podUIDs maps pod name to UID for the pods of one component.
func podUIDs(ctx context.Context, index, component string) map[string]types.UID {
	pods, err := cluster.Pods(ctx, namespace, index, component, -1, false)
	Expect(err).NotTo(HaveOccurred())
	out := map[string]types.UID{}
	for _, p := range pods {
		out[p.Name] = p.UID
	}
	return out
}

// waitPodReplaced waits until the named pod exists with a new UID and is ready.
func waitPodReplaced(ctx context.Context, name string, old types.UID, timeout time.Duration) {
	Eventually(func(g Gomega) {
		var p corev1.Pod
		g.Expect(cluster.Client.Get(ctx, objKey(namespace, name), &p)).To(Succeed())
		g.Expect(p.UID).NotTo(Equal(old), "pod %s not replaced yet", name)
		g.Expect(framework.PodReady(&p)).To(BeTrue(), "pod %s not ready yet", name)
	}).WithContext(ctx).WithTimeout(timeout).WithPolling(500 * time.Millisecond).Should(Succeed())
}

// routingTable reads the index's routing table from its ConfigMap: specs never assume
// the initial even table.
func routingTable(ctx context.Context, index string) slots.Table {
	var cm corev1.ConfigMap
	Expect(cluster.Client.Get(ctx, objKey(namespace, slots.ConfigMapName(index)), &cm)).To(Succeed())
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
