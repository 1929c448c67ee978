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
	"iter"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	shardclient "github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/kube"
)

// Defaults of the LoadCollector.
const (
	// defaultLoadInterval is short because a scrape sits on the path from a load step to
	// the autoscaler's decision; a scrape is one small GET per ready shard pod.
	defaultLoadInterval    = 2 * time.Second
	defaultLoadTimeout     = 2 * time.Second
	defaultLoadWindow      = 30 // one minute at the default interval
	defaultLoadConcurrency = 8
	// A pod whose newest report is older than staleIntervals scrape intervals no longer
	// counts: it stopped answering, and its last figures would lie.
	staleIntervals = 3
)

// ShardLoad is the load of one shard, summed or maxed over its ready pods.
type ShardLoad struct {
	// Vectors held by the primary (the largest count among the pods if the primary did
	// not report: a replica lags, it never holds more).
	Vectors int64
	// QPS is the 10-second query rate summed over the pods, rounded.
	QPS int64
	// P99Millis is the highest p99 latency among the pods, rounded up.
	P99Millis int64
	// Pods is how many pods reported.
	Pods int
}

// loadSample is one report of one pod.
type loadSample struct {
	at     time.Time
	report shardclient.LoadReport
}

// podLoad is the window of reports of one shard pod, newest last.
type podLoad struct {
	index   types.NamespacedName
	shard   int32
	ordinal int
	samples []loadSample
}

// LoadCollector scrapes GET /v1/load of every ready shard pod the operator manages, keeps
// a short window of reports per pod, and reports per-shard and per-slot load. When an
// index's shard load changes it sends the index on Events, so the reconciler writes the
// figures into status.shards.
//
// Concurrency: Start runs the scrape loop in one goroutine; ShardLoad, SlotLoad and
// ReplicaLag may be called from any goroutine (the reconciler's workers); a mutex
// guards the windows.
type LoadCollector struct {
	// Reader lists pods; the manager's cache.
	Reader client.Reader
	// HTTP is the client for /v1/load; nil uses one with Timeout.
	HTTP *http.Client
	// Interval between scrapes; 0 means 5s.
	Interval time.Duration
	// Timeout of one pod's request; 0 means 2s.
	Timeout time.Duration
	// Window is the number of reports kept per pod; 0 means 12.
	Window int
	// Concurrency bounds the requests in flight; 0 means 8.
	Concurrency int
	// Events receives an index whose load changed; nil sends nothing. Buffer it: a full
	// channel drops the notification (the next change sends another).
	Events chan event.GenericEvent

	mu        sync.Mutex
	pods      map[types.NamespacedName]*podLoad
	published map[types.NamespacedName]map[int32]ShardLoad
}

// NeedLeaderElection makes only the leader scrape: its reconciler is the one writing status.
func (c *LoadCollector) NeedLeaderElection() bool { return true }

// Start scrapes until ctx ends; it implements manager.Runnable.
func (c *LoadCollector) Start(ctx context.Context) error {
	t := time.NewTicker(c.interval())
	defer t.Stop()
	for {
		c.ScrapeOnce(ctx, time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *LoadCollector) interval() time.Duration { return orDefault(c.Interval, defaultLoadInterval) }

func orDefault[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// loadTarget is one pod to scrape.
type loadTarget struct {
	pod     types.NamespacedName
	index   types.NamespacedName
	shard   int32
	ordinal int
	url     string
}

// scrapeTargets picks the pods worth asking: shard pods of the operator, Ready, with an
// IP, not being deleted. The port is the container port named "http" (8080 by default).
func scrapeTargets(pods []corev1.Pod) []loadTarget {
	var out []loadTarget
	for i := range pods {
		p := &pods[i]
		k, err := strconv.Atoi(p.Labels[labelShard])
		if err != nil || p.Labels[labelInstance] == "" || p.Status.PodIP == "" || p.DeletionTimestamp != nil || !kube.PodReady(p) {
			continue
		}
		ord, ok := podOrdinal(shardSetName(p.Labels[labelInstance], int32(k)), p.Name)
		if !ok {
			continue
		}
		out = append(out, loadTarget{
			pod:     types.NamespacedName{Namespace: p.Namespace, Name: p.Name},
			index:   types.NamespacedName{Namespace: p.Namespace, Name: p.Labels[labelInstance]},
			shard:   int32(k),
			ordinal: int(ord),
			url:     podURL(p),
		})
	}
	return out
}

// ScrapeOnce asks every ready shard pod for its load, records the answers, forgets pods
// that are gone, and notifies the indexes whose shard load changed. A pod that does not
// answer is logged at V(1) and otherwise skipped: load is advisory.
func (c *LoadCollector) ScrapeOnce(ctx context.Context, now time.Time) {
	logger := log.FromContext(ctx).WithName("loadcollector")
	var pods corev1.PodList
	if err := c.Reader.List(ctx, &pods, client.MatchingLabels{labelManagedBy: managedBy, labelComponent: componentShard}); err != nil {
		logger.Error(err, "Listing shard pods")
		return
	}
	targets := scrapeTargets(pods.Items)
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: orDefault(c.Timeout, defaultLoadTimeout)}
	}
	reports := make([]*shardclient.LoadReport, len(targets))
	sem := make(chan struct{}, orDefault(c.Concurrency, defaultLoadConcurrency))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			rctx, cancel := context.WithTimeout(ctx, orDefault(c.Timeout, defaultLoadTimeout))
			defer cancel()
			rep, err := shardclient.New(t.url, shardclient.WithHTTPClient(hc)).Load(rctx)
			if err != nil {
				logger.V(1).Info("Load report failed", "pod", t.pod, "error", err.Error())
				return
			}
			reports[i] = rep
		}()
	}
	wg.Wait()

	c.mu.Lock()
	if c.pods == nil {
		c.pods = map[types.NamespacedName]*podLoad{}
		c.published = map[types.NamespacedName]map[int32]ShardLoad{}
	}
	seen := map[types.NamespacedName]bool{}
	indexes := map[types.NamespacedName]bool{}
	for i, t := range targets {
		seen[t.pod] = true
		indexes[t.index] = true
		if reports[i] == nil {
			continue
		}
		pl := c.pods[t.pod]
		if pl == nil || pl.shard != t.shard {
			pl = &podLoad{index: t.index, shard: t.shard, ordinal: t.ordinal}
			c.pods[t.pod] = pl
		}
		pl.samples = append(pl.samples, loadSample{at: now, report: *reports[i]})
		if w := orDefault(c.Window, defaultLoadWindow); len(pl.samples) > w {
			pl.samples = append(pl.samples[:0], pl.samples[len(pl.samples)-w:]...)
		}
	}
	for name, pl := range c.pods {
		if !seen[name] {
			delete(c.pods, name)
			indexes[pl.index] = true
		}
	}
	for idx := range c.published {
		indexes[idx] = true
	}
	var changed []types.NamespacedName
	for idx := range indexes {
		agg := c.shardLoadLocked(idx, now)
		if !maps.Equal(agg, c.published[idx]) {
			changed = append(changed, idx)
		}
		if len(agg) == 0 {
			delete(c.published, idx)
		} else {
			c.published[idx] = agg
		}
	}
	c.mu.Unlock()

	for _, idx := range changed {
		c.notify(idx)
	}
}

func (c *LoadCollector) notify(idx types.NamespacedName) {
	if c.Events == nil {
		return
	}
	ev := event.GenericEvent{Object: &annv1alpha1.AnnIndex{}}
	ev.Object.SetNamespace(idx.Namespace)
	ev.Object.SetName(idx.Name)
	select {
	case c.Events <- ev:
	default:
	}
}

// ShardLoad returns the current load of each shard of an index that has fresh reports.
func (c *LoadCollector) ShardLoad(index types.NamespacedName) map[int32]ShardLoad {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.published[index])
}

func (c *LoadCollector) shardLoadLocked(index types.NamespacedName, now time.Time) map[int32]ShardLoad {
	var latest []podLatest
	for _, pl := range c.freshLocked(index, now) {
		latest = append(latest, podLatest{shard: pl.shard, ordinal: pl.ordinal, report: pl.samples[len(pl.samples)-1].report})
	}
	return aggregateLoad(latest)
}

// freshLocked yields the pods of index whose newest sample is fresh at now (not older
// than staleIntervals scrapes), by name; their samples are not empty. Called with c.mu held.
func (c *LoadCollector) freshLocked(index types.NamespacedName, now time.Time) iter.Seq2[types.NamespacedName, *podLoad] {
	return func(yield func(types.NamespacedName, *podLoad) bool) {
		for name, pl := range c.pods {
			if pl.index != index || len(pl.samples) == 0 || now.Sub(pl.samples[len(pl.samples)-1].at) > staleIntervals*c.interval() {
				continue
			}
			if !yield(name, pl) {
				return
			}
		}
	}
}

// podLatest is the newest fresh report of one pod.
type podLatest struct {
	shard   int32
	ordinal int
	report  shardclient.LoadReport
}

// aggregateLoad folds pod reports into shard load: vectors from the primary (ordinal 0)
// or else the most any pod holds, QPS summed, p99 the worst pod's.
func aggregateLoad(pods []podLatest) map[int32]ShardLoad {
	out := map[int32]ShardLoad{}
	primary := map[int32]bool{}
	qps := map[int32]float64{} // summed before rounding, so small rates add up
	for _, p := range pods {
		l := out[p.shard]
		l.Pods++
		v := int64(p.report.Vectors)
		switch {
		case p.ordinal == 0:
			l.Vectors, primary[p.shard] = v, true
		case !primary[p.shard]:
			l.Vectors = max(l.Vectors, v)
		}
		qps[p.shard] += finite(p.report.QPS10s)
		l.P99Millis = max(l.P99Millis, int64(math.Ceil(finite(p.report.LatencyP99Ms))))
		out[p.shard] = l
	}
	for k, q := range qps {
		l := out[k]
		l.QPS = int64(math.Round(q))
		out[k] = l
	}
	return out
}

// finite maps NaN, infinities and negatives, which a broken report may carry, to 0.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0
	}
	return f
}

// SlotLoad returns the slot-attributable load of an index per scrape interval, oldest
// first: for each interval between two consecutive scrapes, the partition-scoped queries
// per slot summed over the shard's pods and the writes per slot of the primaries
// (ordinal 0: a replica applies the same writes again), per second. A counter that went
// down (the pod restarted) counts from zero. Nothing is returned when the newest interval
// ended more than staleIntervals scrapes ago. The migration planner reads skew from it, and a skew held over
// several intervals is a trend, not a burst.
func (c *LoadCollector) SlotLoad(index types.NamespacedName, now time.Time) []shardLoadSample {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	byEnd := map[time.Time]*shardLoadSample{}
	for _, pl := range c.pods {
		if pl.index != index {
			continue
		}
		for i := 1; i < len(pl.samples); i++ {
			prev, cur := pl.samples[i-1], pl.samples[i]
			secs := cur.at.Sub(prev.at).Seconds()
			if secs <= 0 {
				continue
			}
			s := byEnd[cur.at]
			if s == nil {
				s = &shardLoadSample{Queries: map[int]float64{}, Writes: map[int]float64{}}
				byEnd[cur.at] = s
			}
			addRates(s.Queries, prev.report.SlotQueries, cur.report.SlotQueries, secs)
			if pl.ordinal == 0 {
				addRates(s.Writes, prev.report.SlotWrites, cur.report.SlotWrites, secs)
			}
		}
	}
	ends := slices.SortedFunc(maps.Keys(byEnd), func(a, b time.Time) int { return a.Compare(b) })
	if len(ends) == 0 || now.Sub(ends[len(ends)-1]) > staleIntervals*c.interval() {
		return nil
	}
	out := make([]shardLoadSample, len(ends))
	for i, at := range ends {
		out[i] = *byEnd[at]
	}
	return out
}

// addRates adds (cur-prev)/secs of each slot counter to into.
func addRates(into map[int]float64, prev, cur map[int]uint64, secs float64) {
	for slot, n := range cur {
		was := prev[slot]
		if n < was {
			was = 0
		}
		if d := n - was; d > 0 {
			into[slot] += float64(d) / secs
		}
	}
}

// ReplicaLag returns, for shard k of an index, the largest replication lag (records)
// among its read replicas' fresh reports, and how many replicas reported. The migration
// executor hands slots to a shard only once its replicas have what its primary imported:
// the routers read from them at the new epoch.
func (c *LoadCollector) ReplicaLag(index types.NamespacedName, k int32, now time.Time) (lag uint64, replicas int) {
	if c == nil {
		return 0, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, pl := range c.freshLocked(index, now) {
		if pl.shard != k || pl.ordinal == 0 {
			continue
		}
		replicas++
		lag = max(lag, pl.samples[len(pl.samples)-1].report.ReplicationLagRecords)
	}
	return lag, replicas
}
