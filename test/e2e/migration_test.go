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

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
	"github.com/annshard/annshard/test/e2e/framework"
)

const reshardTimeout = 8 * time.Minute

// writeLoad upserts fresh vectors through the routers from a few goroutines until
// stopped, remembering every acknowledged one and the slowest acknowledgement.
type writeLoad struct {
	failed  atomic.Int64
	mu      sync.Mutex
	acked   map[string][]float32
	lastErr error
	slowest time.Duration
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

func startWriteLoad(ctx context.Context, r *framework.Routers, dim, workers int) *writeLoad {
	ctx, cancel := context.WithCancel(ctx)
	l := &writeLoad{stop: cancel, acked: map[string][]float32{}}
	src := framework.Generate(5000, 0, dim, 8, 0, 4242)
	for w := range workers {
		l.wg.Go(func() {
			for i := w; ctx.Err() == nil; i += workers {
				id := fmt.Sprintf("mig-w%d-%d", w, i)
				vec := src.Vectors[i%len(src.Vectors)]
				start := time.Now()
				err := r.Do(ctx, func(c *client.Client) error {
					_, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: id, Vector: vec}}})
					return err
				})
				took := time.Since(start)
				l.mu.Lock()
				switch {
				case ctx.Err() != nil:
				case err != nil:
					l.failed.Add(1)
					l.lastErr = err
				default:
					l.acked[id] = vec
					l.slowest = max(l.slowest, took)
				}
				l.mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	return l
}

func (l *writeLoad) finish() (map[string][]float32, int64, error, time.Duration) {
	l.stop()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked, l.failed.Load(), l.lastErr, l.slowest
}

func setShards(ctx context.Context, index string, n int32) {
	idx := getIndex(ctx, index)
	patch := ctrlclient.MergeFrom(idx.DeepCopy())
	idx.Spec.Shards = n
	Expect(cluster.Client.Patch(ctx, idx, patch)).To(Succeed())
}

// waitResharded waits until the table has n shards with an even share each and no move
// is in flight, failing at once on a Failed move.
func waitResharded(ctx context.Context, index string, n int) {
	Eventually(func(g Gomega) {
		idx := &annv1alpha1.AnnIndex{}
		g.Expect(cluster.Client.Get(ctx, objKey(namespace, index), idx)).To(Succeed())
		for _, m := range idx.Status.Migrations {
			Expect(m.Phase).NotTo(Equal(annv1alpha1.MigrationFailed), "move %s failed: %s", m.ID, m.Message)
		}
		g.Expect(idx.Status.ActiveMigrations).To(BeZero(), "moves in flight: %s", idx.Status.Migration)
		tab := routingTable(ctx, index)
		g.Expect(tab.Shards).To(Equal(n))
		for k, c := range slotCounts(tab) {
			g.Expect(c).To(BeNumerically("~", slots.Count/n, 1), "shard %d owns %d slots", k, c)
		}
	}).WithContext(ctx).WithTimeout(reshardTimeout).WithPolling(2 * time.Second).Should(Succeed())
}

// handoffPauses are the write pauses of the handoffs in status.migrations.
func handoffPauses(ctx context.Context, index string) []time.Duration {
	idx := getIndex(ctx, index)
	var out []time.Duration
	for _, m := range idx.Status.Migrations {
		if m.Phase == annv1alpha1.MigrationDone {
			out = append(out, time.Duration(m.WritePauseMillis)*time.Millisecond)
		}
	}
	return out
}

// deleteOperatorPod deletes the (leading) operator pod; its Deployment starts another.
func deleteOperatorPod(ctx context.Context) {
	pods := operatorPods(ctx)
	for i := range pods {
		Expect(cluster.Client.Delete(ctx, &pods[i])).To(Succeed())
	}
}

// partitionsOn returns n partition names whose slots differ, that the table gives to
// shard k, and that are not in avoid.
func partitionsOn(tab slots.Table, k, n int, avoid slots.Set) []string {
	var out []string
	seen := map[int]bool{}
	for i := 0; len(out) < n; i++ {
		p := "hot" + strconv.Itoa(i)
		if s := slots.Of(p); tab.ShardOf(s) == k && !seen[s] && !avoid.Has(s) {
			seen[s] = true
			out = append(out, p)
		}
	}
	return out
}

// partitionQPS is, per shard, the partition-scoped queries per second its pods counted
// over d: what load rebalancing acts on.
func partitionQPS(ctx context.Context, index string, shards int, d time.Duration) []float64 {
	count := func() []uint64 {
		out := make([]uint64, shards)
		for k := range shards {
			reps, err := cluster.ShardLoad(ctx, namespace, index, k)
			Expect(err).NotTo(HaveOccurred())
			for _, r := range reps {
				for _, n := range r.SlotQueries {
					out[k] += n
				}
			}
		}
		return out
	}
	a := count()
	time.Sleep(d)
	b := count()
	out := make([]float64, shards)
	for k := range out {
		if b[k] >= a[k] {
			out[k] = float64(b[k]-a[k]) / d.Seconds()
		}
	}
	return out
}

func skewOf(load []float64) float64 {
	sum, top := 0.0, 0.0
	for _, l := range load {
		sum += l
		top = max(top, l)
	}
	if sum == 0 {
		return 0
	}
	return top / (sum / float64(len(load)))
}

var _ = Describe("Slot migration", Ordered, Label("migration"), func() {
	const name = "mig"
	const dim = 16
	var (
		routers *framework.Routers
		data    *framework.Dataset
	)

	BeforeAll(func(ctx SpecContext) {
		By("creating a 2-shard index with a primary and a read replica per shard, loaded through the router")
		idx := newIndex(name, dim)
		idx.Spec.Replicas = annv1alpha1.ReplicaRange{Min: 2, Max: 2}
		Expect(cluster.Client.Create(ctx, idx)).To(Succeed())
		_, err := cluster.WaitHealthy(ctx, objKey(namespace, name), availableTimeout, func(s string) {
			GinkgoWriter.Printf("%s %s\n", time.Now().Format(time.TimeOnly), s)
		})
		Expect(err).NotTo(HaveOccurred())
		routers, err = cluster.Router(ctx, namespace, name)
		Expect(err).NotTo(HaveOccurred())
		data = framework.Generate(2000, 50, dim, 8, 8, 11)
		n, err := data.Load(ctx, routers, 200)
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(Equal(2000))
	}, NodeTimeout(availableTimeout+2*time.Minute))

	It("reshards 2 -> 3 -> 2 under queries and writes, across an operator restart, losing nothing", func(ctx SpecContext) {
		before := routingTable(ctx, name)
		queries := startQueryLoad(ctx, routers, data.Queries, 2)
		writes := startWriteLoad(ctx, routers, dim, 2)

		By("growing to 3 shards")
		start := time.Now()
		setShards(ctx, name, 3)
		By("deleting the operator pod once a move copies")
		// On a quiet machine a move can copy and catch up between two polls: poll often,
		// and if a move is done unseen, restart the operator with the next one pending
		// (still in the middle of the reshard, with a table the restarted operator must
		// take up).
		var restartedAt annv1alpha1.MigrationPhase
		Eventually(func() bool {
			var done, pending bool
			for _, m := range getIndex(ctx, name).Status.Migrations {
				switch m.Phase {
				case annv1alpha1.MigrationCopying, annv1alpha1.MigrationCatchingUp:
					restartedAt = m.Phase
					return true
				case annv1alpha1.MigrationDone:
					done = true
				case annv1alpha1.MigrationPending:
					pending = true
				}
			}
			if done && pending {
				restartedAt = annv1alpha1.MigrationPending
			}
			return done && pending
		}).WithContext(ctx).WithTimeout(reshardTimeout).WithPolling(20*time.Millisecond).Should(BeTrue(),
			"no move seen copying, nor one pending after another was done")
		deleteOperatorPod(ctx)
		GinkgoWriter.Printf("operator pod deleted with a move %s\n", restartedAt)
		waitResharded(ctx, name, 3)
		grow := time.Since(start)
		Expect(routingTable(ctx, name).Epoch).To(BeNumerically(">", before.Epoch))

		By("shrinking back to 2 shards")
		start = time.Now()
		setShards(ctx, name, 2)
		waitResharded(ctx, name, 2)
		Eventually(func() bool {
			err := cluster.Client.Get(ctx, objKey(namespace, name+"-shard-2"), &appsv1.StatefulSet{})
			return apierrors.IsNotFound(err)
		}).WithContext(ctx).WithTimeout(2*time.Minute).WithPolling(time.Second).Should(BeTrue(), "the emptied shard's StatefulSet stays")
		shrink := time.Since(start)

		ok, failedQ, lastQ := queries.finish()
		acked, failedW, lastW, slowest := writes.finish()
		pauses := handoffPauses(ctx, name)
		longest := time.Duration(0)
		for _, p := range pauses {
			longest = max(longest, p)
		}
		report := fmt.Sprintf("reshard 2->3 took %s (operator restarted with a move %s), 3->2 took %s; %d handoffs, longest write pause %s (status.migrations), slowest acknowledged write %s; %d queries, %d writes",
			grow.Round(time.Second), restartedAt, shrink.Round(time.Second), len(pauses), longest, slowest.Round(time.Millisecond), ok, len(acked))
		AddReportEntry("migration", report)
		GinkgoWriter.Println(report)
		Expect(failedQ).To(BeZero(), "last failed query: %v", lastQ)
		Expect(failedW).To(BeZero(), "last failed write: %v", lastW)
		Expect(ok).To(BeNumerically(">", 50))
		Expect(len(acked)).To(BeNumerically(">", 50))
		Expect(pauses).NotTo(BeEmpty())

		By("reading back every acknowledged write and the initial data")
		for id, vec := range acked {
			v, err := getVector(ctx, routers, id, "")
			Expect(err).NotTo(HaveOccurred(), "acknowledged vector %s lost", id)
			Expect(v.Vector).To(Equal(vec), "vector %s", id)
		}
		for i, id := range data.IDs {
			v, err := getVector(ctx, routers, id, data.Partitions[i])
			Expect(err).NotTo(HaveOccurred(), "vector %s lost", id)
			Expect(v.Vector).To(Equal(data.Vectors[i]))
		}
	}, NodeTimeout(3*reshardTimeout))

	It("moves slots off a shard that a skewed load keeps hot, and the skew falls", func(ctx SpecContext) {
		tab := routingTable(ctx, name)
		// Slots that just moved are in their cooldown: the planner leaves them be.
		idx := getIndex(ctx, name)
		var moved slots.Set
		for _, m := range idx.Status.Migrations {
			set, err := slots.ParseSet(m.Slots)
			Expect(err).NotTo(HaveOccurred())
			moved = moved.Union(set)
		}
		hot := partitionsOn(tab, 0, 4, moved)
		By(fmt.Sprintf("querying partitions %v, all on shard 0", hot))
		lctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var failed atomic.Int64
		for w, p := range hot {
			wg.Go(func() {
				// A fresh vector each time: the router's result cache would answer a
				// repeated query without asking the shard.
				rng := rand.New(rand.NewPCG(uint64(w), 99))
				q := make([]float32, dim)
				for lctx.Err() == nil {
					for j := range q {
						q[j] = float32(rng.NormFloat64() * 4)
					}
					err := routers.Do(lctx, func(c *client.Client) error {
						_, err := c.Search(lctx, &client.SearchRequest{Vector: q, K: 5, Partition: p})
						return err
					})
					if err != nil && lctx.Err() == nil {
						failed.Add(1)
					}
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
		defer func() { stop(); wg.Wait() }()
		// Measured at once: the planner needs SkewSamples load samples of the skew
		// before it moves anything, longer than this.
		time.Sleep(time.Second)
		skewBefore := skewOf(partitionQPS(ctx, name, 2, 4*time.Second))
		now := routingTable(ctx, name)
		for _, p := range hot {
			Expect(now.ShardOf(slots.Of(p))).To(Equal(0), "partition %s moved before the skew was measured", p)
		}

		By("waiting for a Rebalance move to finish")
		Eventually(func(g Gomega) {
			idx := &annv1alpha1.AnnIndex{}
			g.Expect(cluster.Client.Get(ctx, objKey(namespace, name), idx)).To(Succeed())
			done := false
			for _, m := range idx.Status.Migrations {
				Expect(m.Phase).NotTo(Equal(annv1alpha1.MigrationFailed), "move %s failed: %s", m.ID, m.Message)
				done = done || (m.Reason == "Rebalance" && m.Phase == annv1alpha1.MigrationDone && m.FromShard == 0)
			}
			g.Expect(done).To(BeTrue(), "no finished Rebalance move yet: %s", idx.Status.Migration)
		}).WithContext(ctx).WithTimeout(reshardTimeout).WithPolling(2 * time.Second).Should(Succeed())
		time.Sleep(5 * time.Second)
		skewAfter := skewOf(partitionQPS(ctx, name, 2, 10*time.Second))
		report := fmt.Sprintf("partition-query skew (hottest shard / mean) %.2f before, %.2f after", skewBefore, skewAfter)
		AddReportEntry("rebalance", report)
		GinkgoWriter.Println(report)
		Expect(skewAfter).To(BeNumerically("<", skewBefore))
		Expect(failed.Load()).To(BeZero())
		after := routingTable(ctx, name)
		n := 0
		for _, p := range hot {
			if after.ShardOf(slots.Of(p)) != 0 {
				n++
			}
		}
		Expect(n).To(BeNumerically(">=", 1), "no hot partition left shard 0")
		Expect(n).To(BeNumerically("<", len(hot)), "every hot partition left shard 0: the skew was reversed")
	}, NodeTimeout(reshardTimeout+2*time.Minute))
})
