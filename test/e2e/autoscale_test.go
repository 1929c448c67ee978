package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
	"github.com/annshard/annshard/test/e2e/framework"
)

// openLoad sends searches at a set rate whatever the answers take (open loop: a slow
// answer does not slow the sender down, as with real clients), and upserts at a small
// steady rate, counting every failure.
type openLoad struct {
	rate                      atomic.Int64 // searches per second
	sent, answered, failed    atomic.Int64
	written, writeFailed      atomic.Int64
	mu                        sync.Mutex
	lastErr                   error
	acked                     []client.Vector
	stop                      context.CancelFunc
	wg                        sync.WaitGroup
	inflight                  atomic.Int64
	maxInflight, overInflight atomic.Int64
}

const openLoadMaxInflight = 256

func startOpenLoad(ctx context.Context, r *framework.Routers, data *framework.Dataset, partition string, writesPerSec int) *openLoad {
	ctx, cancel := context.WithCancel(ctx)
	l := &openLoad{stop: cancel}
	fail := func(counter *atomic.Int64, err error) {
		counter.Add(1)
		l.mu.Lock()
		l.lastErr = err
		l.mu.Unlock()
	}
	l.wg.Go(func() {
		next := time.Now()
		for i := 0; ctx.Err() == nil; i++ {
			rate := l.rate.Load()
			if rate <= 0 {
				time.Sleep(50 * time.Millisecond)
				next = time.Now()
				continue
			}
			next = next.Add(time.Second / time.Duration(rate))
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			if l.inflight.Load() >= openLoadMaxInflight {
				l.overInflight.Add(1) // the cluster cannot keep up: reported, not hidden
				continue
			}
			q := data.Queries[i%len(data.Queries)]
			l.sent.Add(1)
			n := l.inflight.Add(1)
			if n > l.maxInflight.Load() {
				l.maxInflight.Store(n)
			}
			l.wg.Go(func() {
				defer l.inflight.Add(-1)
				err := r.Do(ctx, func(c *client.Client) error {
					_, err := c.Search(ctx, &client.SearchRequest{Vector: q, K: 10, Partition: partition})
					return err
				})
				switch {
				case ctx.Err() != nil:
				case err != nil:
					fail(&l.failed, err)
				default:
					l.answered.Add(1)
				}
			})
		}
	})
	l.wg.Go(func() {
		t := time.NewTicker(time.Second / time.Duration(writesPerSec))
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			v := client.Vector{ID: "as-w" + strconv.Itoa(i), Vector: data.Queries[i%len(data.Queries)], Partition: partition}
			err := r.Do(ctx, func(c *client.Client) error {
				_, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{v}})
				return err
			})
			switch {
			case ctx.Err() != nil:
			case err != nil:
				fail(&l.writeFailed, err)
			default:
				l.written.Add(1)
				l.mu.Lock()
				l.acked = append(l.acked, v)
				l.mu.Unlock()
			}
		}
	})
	return l
}

func (l *openLoad) finish() {
	l.stop()
	l.wg.Wait()
}

func (l *openLoad) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("searches sent %d, answered %d, failed %d, not sent (over %d in flight) %d, max in flight %d; writes acknowledged %d, failed %d; last error: %v",
		l.sent.Load(), l.answered.Load(), l.failed.Load(), openLoadMaxInflight, l.overInflight.Load(), l.maxInflight.Load(),
		l.written.Load(), l.writeFailed.Load(), l.lastErr)
}

var _ = Describe("Autoscaling", Label("autoscale"), func() {
	It("adds a serving replica to the hot shard under a query step and returns to min after it, failing no query or write", func(ctx SpecContext) {
		const (
			name      = "autoscale"
			dim       = 16
			target    = 20 // QPS per replica
			partition = "p1"
		)
		idx := newIndex(name, dim)
		idx.Spec.Replicas = annv1alpha1.ReplicaRange{Min: 1, Max: 3}
		idx.Spec.Router.CacheEntries = ptr.To[int32](0) // every query reaches a shard
		idx.Spec.Autoscaling = annv1alpha1.AutoscalingSpec{Enabled: true, Metric: annv1alpha1.AutoscalingQPSPerReplica,
			Target: target, ScaleDownStabilizationSeconds: ptr.To[int32](10)}
		Expect(cluster.Client.Create(ctx, idx)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { _ = cluster.Client.Delete(ctx, idx) })
		_, err := cluster.WaitHealthy(ctx, objKey(namespace, name), availableTimeout, func(s string) {
			GinkgoWriter.Printf("%s %s\n", time.Now().Format(time.TimeOnly), s)
		})
		Expect(err).NotTo(HaveOccurred())
		routers, err := cluster.Router(ctx, namespace, name)
		Expect(err).NotTo(HaveOccurred())
		data := framework.Generate(1000, 200, dim, 8, 4, 11)
		_, err = data.Load(ctx, routers, 200)
		Expect(err).NotTo(HaveOccurred())

		table := slots.Even(2)
		hot := int32(table.ShardOfKey(partition))
		cold := 1 - hot
		stsName := func(k int32) string { return fmt.Sprintf("%s-shard-%d", name, k) }
		newPod := stsName(hot) + "-1"
		stsReplicas := func(k int32) int32 {
			var sts appsv1.StatefulSet
			if err := cluster.Client.Get(ctx, objKey(namespace, stsName(k)), &sts); err != nil {
				return -1
			}
			return ptr.Deref(sts.Spec.Replicas, 0)
		}

		By("sending 5 queries/s to the hot shard, below its target of 20/replica")
		load := startOpenLoad(ctx, routers, data, partition, 4)
		load.rate.Store(5)
		time.Sleep(10 * time.Second)
		Expect(stsReplicas(hot)).To(BeEquivalentTo(1), "no scale-up below target")

		By("stepping up to 50 queries/s")
		step := time.Now()
		load.rate.Store(50)
		// Each milestone of the path from the step to a serving replica, polled.
		milestones := []string{"metric over target in status", "StatefulSet grown", "pod created", "pod scheduled", "pod running", "pod ready", "pod serving queries"}
		at := map[string]time.Duration{}
		mark := func(m string, ok bool) {
			if _, seen := at[m]; ok && !seen {
				at[m] = time.Since(step)
			}
		}
		Eventually(func(g Gomega) {
			var cur annv1alpha1.AnnIndex
			if cluster.Client.Get(ctx, objKey(namespace, name), &cur) == nil {
				for _, sh := range cur.Status.Shards {
					mark(milestones[0], sh.Shard == hot && sh.ObservedMetric != nil && *sh.ObservedMetric > target*11/10)
				}
			}
			mark(milestones[1], stsReplicas(hot) >= 2)
			var p corev1.Pod
			if cluster.Client.Get(ctx, objKey(namespace, newPod), &p) == nil {
				mark(milestones[2], true)
				mark(milestones[3], p.Spec.NodeName != "")
				mark(milestones[4], p.Status.Phase == corev1.PodRunning)
				mark(milestones[5], framework.PodReady(&p))
				if framework.PodReady(&p) {
					if rep, err := client.New(framework.PodURL(&p)).Load(ctx); err == nil {
						var served uint64
						for _, n := range rep.SlotQueries {
							served += n
						}
						mark(milestones[6], served > 0)
					}
				}
			}
			g.Expect(at).To(HaveKey(milestones[6]), "%s not serving yet; %s", newPod, load)
		}).WithContext(ctx).WithTimeout(2 * time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())
		var path []string
		for _, m := range milestones {
			if d, ok := at[m]; ok {
				path = append(path, fmt.Sprintf("%s %.1fs", m, d.Seconds()))
			}
		}
		upSecs := at[milestones[6]].Seconds()
		AddReportEntry("autoscale step -> serving seconds", upSecs)
		GinkgoWriter.Printf("autoscale: step -> new replica serving in %.1fs (%s)\n", upSecs, strings.Join(path, ", "))
		Expect(stsReplicas(cold)).To(BeEquivalentTo(1), "the cold shard does not grow")

		By("holding the step until every replica the shard was given is ready")
		_, err = cluster.WaitHealthy(ctx, objKey(namespace, name), 2*time.Minute, nil)
		Expect(err).NotTo(HaveOccurred())
		time.Sleep(5 * time.Second)

		By("stepping down to 5 queries/s: the shard drains and removes its replicas")
		down := time.Now()
		load.rate.Store(5)
		Eventually(func(g Gomega) {
			g.Expect(stsReplicas(hot)).To(BeEquivalentTo(1))
			pods, err := cluster.Pods(ctx, namespace, name, "shard", int(hot), false)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(pods).To(HaveLen(1), "removed replicas still terminating")
		}).WithContext(ctx).WithTimeout(3*time.Minute).WithPolling(500*time.Millisecond).Should(Succeed(), "%s", load)
		downSecs := time.Since(down).Seconds()
		AddReportEntry("autoscale step down -> min seconds", downSecs)
		GinkgoWriter.Printf("autoscale: step down -> back to replicas.min in %.1fs (down window 10s, then one replica per drain)\n", downSecs)
		time.Sleep(3 * time.Second)
		load.finish()
		GinkgoWriter.Printf("autoscale: %s\n", load)

		Expect(load.failed.Load()).To(BeZero(), "%s", load)
		Expect(load.writeFailed.Load()).To(BeZero(), "%s", load)
		Expect(load.overInflight.Load()).To(BeZero(), "%s", load)
		Expect(load.answered.Load()).To(BeNumerically(">", 500))

		By("reading back every acknowledged write")
		for _, v := range load.acked {
			var got *client.Vector
			Expect(routers.Do(ctx, func(c *client.Client) (err error) {
				got, err = c.Get(ctx, v.ID, v.Partition)
				return err
			})).To(Succeed(), "acknowledged write %s", v.ID)
			Expect(got.ID).To(Equal(v.ID))
		}

		By("keeping the removed replicas' volumes, so a replica added back catches up from its WAL")
		var claim corev1.PersistentVolumeClaim
		Expect(cluster.Client.Get(ctx, objKey(namespace, "data-"+newPod), &claim)).To(Succeed())
		Expect(claim.Status.Phase).To(Equal(corev1.ClaimBound))

		var cur annv1alpha1.AnnIndex
		Expect(cluster.Client.Get(ctx, objKey(namespace, name), &cur)).To(Succeed())
		for _, sh := range cur.Status.Shards {
			Expect(sh.DesiredReplicas).To(BeEquivalentTo(1), "shard %d", sh.Shard)
		}
		events := cluster.Events(ctx, namespace)
		Expect(events).To(ContainSubstring(annv1alpha1.ReasonScalingUp))
		Expect(events).To(ContainSubstring(annv1alpha1.ReasonScalingDown))
	})
})
