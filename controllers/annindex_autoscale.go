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
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	shardclient "github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/kube"
)

// The autoscaler decides, per shard and independently, how many pods the shard runs. It
// follows the Kubernetes HPA (pkg/controller/podautoscaler) where the HPA has a rule, and
// says so next to each rule below; where a shard is not a stateless pod (the primary, a
// replica's snapshot copy, a slot migration) it adds named invariants.

// tolerance is the HPA's: a usage ratio within 10 % of 1 changes nothing.
const tolerance = 0.1

// Rate limits for stateful pods: every new replica copies the primary's snapshot, and a
// removed one's queries move to the others, so steps are bounded in size and time.
const (
	// scaleUpPeriod is the window the scale-up limit counts additions in.
	scaleUpPeriod = 30 * time.Second
	// scaleUpPods and scaleUpPercent: within scaleUpPeriod a shard grows to at most the
	// larger of +scaleUpPods and +scaleUpPercent % of what it ran at the period's start
	// (the HPA's default is +4 pods or +100 % per 15 s; snapshots copies make it +2 here).
	scaleUpPods    = 2
	scaleUpPercent = 100
	// scaleDownStep: a shard gives up one replica at a time. Each removal drains the pod
	// from every router first, and the next one waits for scaleDownPeriod.
	scaleDownStep = 1
	// scaleDownPeriod is the least time between a change of a shard's replicas and the
	// start of its next removal, so the load report of the pods that remain (a 10 s rate)
	// shows the queries they took over before another pod goes.
	scaleDownPeriod = 15 * time.Second
)

// latencyScaleDownFraction: with metric LatencyP99 a shard gives up a replica only while
// its p99 stays under this fraction of the target. Latency does not fall in proportion to
// replicas, so it cannot say how many are too many; only a wide margin reads as idle.
const latencyScaleDownFraction = 0.5

// scaleRule is an invariant that holds a shard's replica count where it is, with the
// reason it exists; decisions name the rule that held them (ECK's style of safety rules).
type scaleRule struct {
	Name   string
	Reason string
}

// The invariants of the autoscaler. The first two are clamps (a recommendation below them
// is raised to them); the others hold a scale-down back entirely.
var (
	ruleNeverThePrimary = scaleRule{"NeverThePrimary",
		"ordinal 0 is the shard's primary, the only pod that takes writes; a StatefulSet removes its highest ordinal, so a shard never goes below one pod"}
	ruleNeverBelowMin = scaleRule{"NeverBelowMin",
		"replicas.min is the capacity the user asked for at all times"}
	ruleNotWhileMigrating = scaleRule{"NotWhileMigrating",
		"a shard giving or taking slots serves the copy and the catch-up of the move; it keeps its replicas until the move ends"}
	ruleNotWhileRolling = scaleRule{"NotWhileRolling",
		"a rolling StatefulSet already has a pod restarting; removing another at the same time could leave the shard's reads on too few pods"}
	ruleNoData = scaleRule{"NoScaleDownWithoutData",
		"no ready pod of the shard has a fresh load report; low load cannot be told from a blind collector"}
	ruleDownWindow = scaleRule{"ScaleDownWindow",
		"a higher recommendation was made within scaleDownStabilizationSeconds (or the operator has watched the shard for less than that)"}
	ruleUpWindow = scaleRule{"ScaleUpWindow",
		"a lower recommendation was made within scaleUpStabilizationSeconds"}
	ruleUpRate = scaleRule{"ScaleUpRate",
		fmt.Sprintf("a shard grows by at most %d pods or %d%% per %s: each new replica copies the primary's snapshot", scaleUpPods, scaleUpPercent, scaleUpPeriod)}
	ruleDownRate = scaleRule{"ScaleDownRate",
		fmt.Sprintf("a shard gives up %d replica at a time, at most one per %s", scaleDownStep, scaleDownPeriod)}
)

// podMetric is what the autoscaler knows of one pod of a shard (ordinals 0..current-1).
type podMetric struct {
	// Ready: the pod exists, is not being deleted and passes its readiness probe.
	Ready bool
	// Sampled: the load collector has a fresh report of the pod.
	Sampled bool
	// Value is the pod's metric: queries per second, percent of its CPU request, or p99
	// latency in milliseconds. Meaningful only when Sampled.
	Value float64
}

// timedReplicas is a replica count at a moment: a recommendation, or a change applied.
type timedReplicas struct {
	At       time.Time
	Replicas int32
	// From is the count before a change (changes only).
	From int32
}

// shardHistory is what the autoscaler remembers of one shard between reconciles, as the
// HPA does, in memory: the raw recommendations of the longest window, and the changes
// applied within the rate-limit periods.
type shardHistory struct {
	// Since is when this operator process first decided for the shard. After a restart
	// the history is empty; a scale-down waits until the down window has been watched in
	// full, so a restart never removes replicas on the strength of one sample.
	Since           time.Time
	Recommendations []timedReplicas
	Changes         []timedReplicas
}

// autoscaleInput is everything one shard's decision depends on.
type autoscaleInput struct {
	Spec     annv1alpha1.AutoscalingSpec
	Min, Max int32
	// Current is the replica count the StatefulSet runs now (spec.replicas).
	Current int32
	// Pods are the shard's pods by ordinal, len(Pods) == Current; an ordinal without a
	// pod yet is not Ready.
	Pods      []podMetric
	Migrating bool
	Rolling   bool
	History   shardHistory
	Now       time.Time
}

// scaleDecision is the autoscaler's answer for one shard.
type scaleDecision struct {
	// Current is the count the StatefulSet runs; Desired the one the shard moves to.
	Current, Desired int32
	// Recommendation is the proportional (or latency) recommendation clamped to [min,
	// max], before the windows, rate limits and invariants: what goes into the history.
	Recommendation int32
	// Observed is the metric value the decision was taken on: the mean over the ready
	// sampled pods (QPSPerReplica, CPUUtilization) or the highest p99 (LatencyP99);
	// Known is false when no ready pod had a sample.
	Observed float64
	Known    bool
	// Held names the rule that kept Desired from following the recommendation; nil if
	// none did.
	Held *scaleRule
	// Recheck, when not 0, is how soon a time-bound rule that held the decision (a
	// window, a rate limit) may let it go: the reconciler looks again then, as nothing
	// else may change to wake it.
	Recheck time.Duration
}

func (in autoscaleInput) downWindow() time.Duration {
	if in.Spec.ScaleDownStabilizationSeconds == nil {
		return 300 * time.Second // the schema's default
	}
	return time.Duration(*in.Spec.ScaleDownStabilizationSeconds) * time.Second
}

func (in autoscaleInput) upWindow() time.Duration {
	return time.Duration(in.Spec.ScaleUpStabilizationSeconds) * time.Second
}

// decideScale is the autoscaler: recommendation (HPA proportional rule or latency vote),
// stabilization windows, rate limits, then the invariants, in that order. It is pure.
func decideScale(in autoscaleInput) scaleDecision {
	lo := max(in.Min, 1)
	hi := max(in.Max, lo)
	clamp := func(n int32) int32 { return min(max(n, lo), hi) }
	d := scaleDecision{Current: in.Current}
	raw, observed, known := recommend(in)
	d.Observed, d.Known = observed, known
	if !known {
		// The HPA decides nothing without metrics; a shard outside [min, max] (after an
		// edit of the spec) still moves into it.
		raw = in.Current
	}
	d.Recommendation = clamp(raw)
	desired := clamp(stabilize(in, d.Recommendation))
	var held *scaleRule
	switch {
	case desired < d.Recommendation:
		held = &ruleUpWindow
	case desired > d.Recommendation:
		held = &ruleDownWindow
	}
	if desired > in.Current {
		if limit := scaleUpLimit(in); desired > limit {
			desired, held = max(limit, in.Current), &ruleUpRate
		}
	}
	if desired < in.Current {
		switch {
		case in.Migrating:
			desired, held = in.Current, &ruleNotWhileMigrating
		case in.Rolling:
			desired, held = in.Current, &ruleNotWhileRolling
		case scaleDownTooSoon(in):
			desired, held = in.Current, &ruleDownRate
		default:
			desired = max(desired, in.Current-scaleDownStep)
		}
	}
	switch {
	case !known && desired == in.Current:
		held = &ruleNoData
	case held == nil && raw < 1 && desired == 1 && in.Current == 1:
		held = &ruleNeverThePrimary
	case held == nil && raw < lo && desired == lo && in.Current == lo:
		held = &ruleNeverBelowMin
	}
	d.Desired, d.Held = desired, held
	d.Recheck = recheck(in, d)
	return d
}

// recheck is how long until the time-bound rule that held d expires in part: the
// soonest moment a recommendation leaves its window or a change its rate-limit period.
func recheck(in autoscaleInput, d scaleDecision) time.Duration {
	if d.Held == nil || d.Desired == d.Recommendation {
		return 0
	}
	var soonest time.Duration
	at := func(t time.Time) {
		if wait := t.Sub(in.Now); wait > 0 && (soonest == 0 || wait < soonest) {
			soonest = wait
		}
	}
	switch d.Held {
	case &ruleDownWindow:
		at(in.History.Since.Add(in.downWindow()))
		for _, r := range in.History.Recommendations {
			if r.Replicas > d.Recommendation {
				at(r.At.Add(in.downWindow()))
			}
		}
	case &ruleUpWindow:
		for _, r := range in.History.Recommendations {
			if r.Replicas < d.Recommendation {
				at(r.At.Add(in.upWindow()))
			}
		}
	case &ruleUpRate:
		for _, c := range in.History.Changes {
			at(c.At.Add(scaleUpPeriod))
		}
	case &ruleDownRate:
		for _, c := range in.History.Changes {
			at(c.At.Add(scaleDownPeriod))
		}
	}
	if soonest > 0 {
		soonest += 10 * time.Millisecond // past the edge, not on it
	}
	return soonest
}

// recommend is the HPA's replica calculation for the spec's metric (calcPlainMetricReplicas
// for QPS and CPU, with its treatment of unready pods and pods without a sample); for
// LatencyP99 it is a vote: one more replica while the worst p99 is over target, one fewer
// while it is under latencyScaleDownFraction of it. known is false when no ready pod has a
// sample, and the HPA then decides nothing.
func recommend(in autoscaleInput) (rec int32, observed float64, known bool) {
	target := float64(in.Spec.Target)
	if target <= 0 {
		return in.Current, 0, false
	}
	var sampled []float64
	var unready, missing int
	for _, p := range in.Pods {
		switch {
		case !p.Ready:
			unready++
		case !p.Sampled:
			missing++
		default:
			sampled = append(sampled, p.Value)
		}
	}
	if len(sampled) == 0 {
		return in.Current, 0, false
	}
	if in.Spec.Metric == annv1alpha1.AutoscalingLatencyP99 {
		worst := slices.Max(sampled)
		switch {
		case worst > target*(1+tolerance):
			// Only once every pod counts: the latency of a shard still bringing up a
			// replica does not yet show what that replica adds.
			if unready == 0 {
				return in.Current + 1, worst, true
			}
		case worst < target*latencyScaleDownFraction && missing == 0:
			return in.Current - 1, worst, true
		}
		return in.Current, worst, true
	}

	mean := func(vs []float64) float64 {
		var sum float64
		for _, v := range vs {
			sum += v
		}
		return sum / float64(len(vs))
	}
	observed = mean(sampled)
	ratio := observed / target
	scaleUpWithUnready := unready > 0 && ratio > 1
	if !scaleUpWithUnready && missing == 0 {
		if math.Abs(1-ratio) <= tolerance {
			return in.Current, observed, true
		}
		return int32(math.Ceil(ratio * float64(len(sampled)))), observed, true
	}
	// Fill in what is not measured, the HPA's way: on a scale-up a pod without a sample
	// and a pod not ready count as idle (0), on a scale-down a pod without a sample counts
	// as at target (and not-ready pods are left out).
	filled := slices.Clone(sampled)
	for range missing {
		if ratio < 1 {
			filled = append(filled, target)
		} else {
			filled = append(filled, 0)
		}
	}
	if scaleUpWithUnready {
		for range unready {
			filled = append(filled, 0)
		}
	}
	newRatio := mean(filled) / target
	// No decision from filled-in values that lands in tolerance or flips direction.
	if math.Abs(1-newRatio) <= tolerance || (ratio < 1 && newRatio > 1) || (ratio > 1 && newRatio < 1) {
		return in.Current, observed, true
	}
	n := int32(math.Ceil(newRatio * float64(len(filled))))
	if (newRatio < 1 && n > in.Current) || (newRatio > 1 && n < in.Current) {
		return in.Current, observed, true
	}
	return n, observed, true
}

// stabilize is the HPA's stabilizeRecommendationWithBehaviors: scale up only to the
// lowest recommendation over the up window, down only to the highest over the down
// window; the recommendation being made counts in both. A down window the operator has
// not yet watched in full counts as holding the current count.
func stabilize(in autoscaleInput, rec int32) int32 {
	up, down := rec, rec
	upCut, downCut := in.Now.Add(-in.upWindow()), in.Now.Add(-in.downWindow())
	for _, r := range in.History.Recommendations {
		if r.At.After(upCut) {
			up = min(up, r.Replicas)
		}
		if r.At.After(downCut) {
			down = max(down, r.Replicas)
		}
	}
	if in.History.Since.IsZero() || in.History.Since.After(downCut) {
		down = max(down, in.Current)
	}
	out := in.Current
	if out < up {
		out = up
	}
	if out > down {
		out = down
	}
	return out
}

// scaleUpLimit is the most replicas the shard may run now: the count at the start of the
// current scaleUpPeriod (now minus what was added within it) plus the larger of
// scaleUpPods and scaleUpPercent %.
func scaleUpLimit(in autoscaleInput) int32 {
	start := in.Current
	cut := in.Now.Add(-scaleUpPeriod)
	for _, c := range in.History.Changes {
		if c.At.After(cut) && c.Replicas > c.From {
			start -= c.Replicas - c.From
		}
	}
	start = max(start, 1)
	return max(start+scaleUpPods, start+int32(math.Ceil(float64(start)*scaleUpPercent/100)))
}

// scaleDownTooSoon says whether the shard changed its replicas within scaleDownPeriod.
func scaleDownTooSoon(in autoscaleInput) bool {
	for _, c := range in.History.Changes {
		if in.Now.Sub(c.At) < scaleDownPeriod {
			return true
		}
	}
	return false
}

// autoscaleMemory is the autoscaler's per-shard history, kept by the reconciler across
// reconciles (in memory, like the HPA's): one entry per index and shard.
type autoscaleMemory struct {
	mu     sync.Mutex
	shards map[shardKey]*shardHistory
}

type shardKey struct {
	namespace, index string
	shard            int32
}

// history returns a copy of the shard's history, started now if there is none.
func (m *autoscaleMemory) history(k shardKey, now time.Time) shardHistory {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.get(k, now)
	return shardHistory{Since: h.Since, Recommendations: slices.Clone(h.Recommendations), Changes: slices.Clone(h.Changes)}
}

func (m *autoscaleMemory) get(k shardKey, now time.Time) *shardHistory {
	if m.shards == nil {
		m.shards = map[shardKey]*shardHistory{}
	}
	h := m.shards[k]
	if h == nil {
		h = &shardHistory{Since: now}
		m.shards[k] = h
	}
	return h
}

// historyKeep is how long a recommendation or change is remembered: the longest window
// the API allows, or the longest rate-limit period.
const historyKeep = 3600 * time.Second

// recommended records a raw recommendation and forgets what no window can see any more.
func (m *autoscaleMemory) recommended(k shardKey, now time.Time, rec int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.get(k, now)
	h.Recommendations = append(prune(h.Recommendations, now), timedReplicas{At: now, Replicas: rec})
}

// changed records a change of the shard's replica count that was applied.
func (m *autoscaleMemory) changed(k shardKey, now time.Time, from, to int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.get(k, now)
	h.Changes = append(prune(h.Changes, now), timedReplicas{At: now, From: from, Replicas: to})
}

// lastGrown is when the shard's replicas were last raised by this process; zero if never.
func (m *autoscaleMemory) lastGrown(k shardKey) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	var at time.Time
	if h := m.shards[k]; h != nil {
		for _, c := range h.Changes {
			if c.Replicas > c.From && c.At.After(at) {
				at = c.At
			}
		}
	}
	return at
}

// forget drops the histories of an index (deleted, or autoscaling turned off).
func (m *autoscaleMemory) forget(namespace, index string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.shards {
		if k.namespace == namespace && k.index == index {
			delete(m.shards, k)
		}
	}
}

func prune(rs []timedReplicas, now time.Time) []timedReplicas {
	return slices.DeleteFunc(rs, func(r timedReplicas) bool { return now.Sub(r.At) > historyKeep })
}

// podLoadSample is the newest fresh report of one shard pod, as the autoscaler uses it.
type podLoadSample struct {
	QPS       float64
	P99Millis float64
	// CPUCores is the pod's CPU seconds per second between its oldest report within
	// cpuRateSpan and its newest; HasCPU is false with fewer than two such reports or
	// after a restart (the counter went down).
	CPUCores float64
	HasCPU   bool
}

// cpuRateSpan is how far back the CPU rate of a pod looks (metrics-server's window is
// about as long).
const cpuRateSpan = 15 * time.Second

// podSamples returns the newest fresh report of every shard pod of an index, by pod name.
func (c *LoadCollector) podSamples(index types.NamespacedName, now time.Time) map[string]podLoadSample {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]podLoadSample{}
	for name, pl := range c.freshLocked(index, now) {
		last := pl.samples[len(pl.samples)-1]
		ps := podLoadSample{QPS: finite(last.report.QPS10s), P99Millis: finite(last.report.LatencyP99Ms)}
		for _, first := range pl.samples {
			if last.at.Sub(first.at) > cpuRateSpan {
				continue
			}
			if secs := last.at.Sub(first.at).Seconds(); secs > 0 && last.report.CPUSeconds >= first.report.CPUSeconds {
				ps.CPUCores, ps.HasCPU = finite((last.report.CPUSeconds-first.report.CPUSeconds)/secs), true
			}
			break
		}
		out[name.Name] = ps
	}
	return out
}

// shardPodMetrics is what the autoscaler sees of shard k's pods, ordinals 0..current-1,
// for the index's metric.
func shardPodMetrics(s *scope, k, current int32) []podMetric {
	byName := map[string]*corev1.Pod{}
	for i := range s.shardPods[k] {
		byName[s.shardPods[k][i].Name] = &s.shardPods[k][i]
	}
	out := make([]podMetric, current)
	for ord := range current {
		p := byName[fmt.Sprintf("%s-%d", shardName(s.index, k), ord)]
		if p == nil || p.DeletionTimestamp != nil || !kube.PodReady(p) {
			continue
		}
		out[ord].Ready = true
		sample, ok := s.podLoad[p.Name]
		if !ok {
			continue
		}
		switch s.index.Spec.Autoscaling.Metric {
		case annv1alpha1.AutoscalingCPUUtilization:
			req := podCPURequest(p)
			if sample.HasCPU && req > 0 {
				out[ord].Sampled, out[ord].Value = true, 100*sample.CPUCores/req
			}
		case annv1alpha1.AutoscalingLatencyP99:
			out[ord].Sampled, out[ord].Value = true, sample.P99Millis
		default:
			out[ord].Sampled, out[ord].Value = true, sample.QPS
		}
	}
	return out
}

// podCPURequest is the CPU request of a pod's containers in cores; 0 if none is set,
// and CPUUtilization then has nothing to divide by (as for the HPA).
func podCPURequest(p *corev1.Pod) float64 {
	var cores float64
	for _, c := range p.Spec.Containers {
		if q, ok := c.Resources.Requests[corev1.ResourceCPU]; ok {
			cores += q.AsApproximateFloat64()
		}
	}
	return cores
}

// shardMigrating says whether a slot migration to or from shard k is in flight: any
// phase but Done and Failed.
func shardMigrating(idx *annv1alpha1.AnnIndex, k int32) bool {
	for _, m := range idx.Status.Migrations {
		if (m.FromShard == k || m.ToShard == k) && m.Phase != annv1alpha1.MigrationDone && m.Phase != annv1alpha1.MigrationFailed {
			return true
		}
	}
	return false
}

// stsRollingOut says whether a StatefulSet is rolling out a new pod template (or the
// controller has not observed its newest generation yet); unlike stsRolling it does not
// count a scale as a rollout.
func stsRollingOut(sts *appsv1.StatefulSet) bool {
	return sts.Status.ObservedGeneration < sts.Generation ||
		(sts.Status.UpdateRevision != "" && sts.Status.CurrentRevision != sts.Status.UpdateRevision)
}

// decideReplicas decides the replica count of every served shard (servedShards: those
// of the routing table and a reshard's new ones): the autoscaler's decision with
// autoscaling on, replicas.min with it off. A shard whose
// StatefulSet does not exist yet starts at replicas.min. The count a decision starts
// from is the StatefulSet's, never status, so a lost status changes nothing.
func (r *AnnIndexReconciler) decideReplicas(_ context.Context, s *scope) (ctrl.Result, error) {
	lo, hi := replicaBounds(s.index)
	spec := s.index.Spec.Autoscaling
	if !spec.Enabled {
		r.scaleMemory.forget(s.index.Namespace, s.index.Name)
	}
	now := time.Now()
	var res ctrl.Result
	for k := range servedShards(s) {
		sts := s.shardSets[k]
		if !spec.Enabled || sts == nil {
			s.replicas[k] = lo
			continue
		}
		key := shardKey{s.index.Namespace, s.index.Name, k}
		current := runningReplicas(s.index, sts)
		d := decideScale(autoscaleInput{
			Spec: spec, Min: lo, Max: hi, Current: current,
			Pods:      shardPodMetrics(s, k, current),
			Migrating: shardMigrating(s.index, k),
			Rolling:   stsRollingOut(sts),
			History:   r.scaleMemory.history(key, now),
			Now:       now,
		})
		r.scaleMemory.recommended(key, now, d.Recommendation)
		if at := r.scaleMemory.lastGrown(key); !at.IsZero() && now.Sub(at) < startupBudget(s.index.Spec.ShardServer.Storage) {
			s.grown[k] = true
		}
		s.scale[k] = d
		s.replicas[k] = d.Desired
		res = lowestNonZeroResult(res, ctrl.Result{RequeueAfter: d.Recheck})
	}
	return res, nil
}

// drainPoll is how soon a reconcile looks again at a replica being drained.
const drainPoll = time.Second

// scaleStep is the replica count to write into shard k's StatefulSet now, on the way to
// the decided one. Growing is immediate. Shrinking removes the highest ordinal only once
// it is out of routing: the pod gets the drain mark, and the StatefulSet shrinks when
// every ready router reports it sends the pod no new request and has none open to it;
// until then the count stays and the reconcile asks to be called again. Drain marks on
// pods the shard keeps are removed (a decision that turned back up).
func (r *AnnIndexReconciler) scaleStep(ctx context.Context, s *scope, k int32) (int32, ctrl.Result, error) {
	want := s.replicas[k]
	sts := s.shardSets[k]
	if sts == nil {
		return want, ctrl.Result{}, nil
	}
	current := runningReplicas(s.index, sts)
	keep := max(want, current-1) // pods of lower ordinals stay in routing
	var victim *corev1.Pod
	for i := range s.shardPods[k] {
		p := &s.shardPods[k][i]
		ord, ok := podOrdinal(shardName(s.index, k), p.Name)
		if !ok {
			continue
		}
		if ord == current-1 && want < current {
			victim = p
			continue
		}
		if ord < keep && p.Annotations[shardclient.DrainAnnotation] != "" {
			if err := r.setDrainMark(ctx, p, false); err != nil {
				return current, ctrl.Result{}, err
			}
		}
	}
	if want >= current {
		return want, ctrl.Result{}, nil
	}
	if victim == nil || victim.DeletionTimestamp != nil {
		return current - 1, ctrl.Result{}, nil // nothing routes to a pod that is not there
	}
	if victim.Annotations[shardclient.DrainAnnotation] != "true" {
		if err := r.setDrainMark(ctx, victim, true); err != nil {
			return current, ctrl.Result{}, err
		}
		s.draining[k] = "draining " + victim.Name + " from the routers"
		return current, ctrl.Result{RequeueAfter: drainPoll}, nil
	}
	done, not, err := r.routersAll(ctx, s.index, podDrained(k, victim.Name))
	if err != nil {
		return current, ctrl.Result{}, err
	}
	if !done {
		s.draining[k] = "draining " + victim.Name + ": " + culprits(not)
		return current, ctrl.Result{RequeueAfter: drainPoll}, nil
	}
	return current - 1, ctrl.Result{}, nil
}

// podOrdinal is the ordinal of a pod of the StatefulSet named set, from the pod's name
// ("<set>-<ordinal>"); false for a pod of another set.
func podOrdinal(set, name string) (int32, bool) {
	rest, ok := strings.CutPrefix(name, set+"-")
	ord, err := strconv.ParseInt(rest, 10, 32)
	if !ok || err != nil || ord < 0 {
		return 0, false
	}
	return int32(ord), true
}

// setDrainMark puts the drain annotation on a shard pod (routers stop choosing it) or
// takes it off.
func (r *AnnIndexReconciler) setDrainMark(ctx context.Context, p *corev1.Pod, on bool) error {
	patch := client.MergeFrom(p.DeepCopy())
	if on {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[shardclient.DrainAnnotation] = "true"
	} else {
		delete(p.Annotations, shardclient.DrainAnnotation)
	}
	if err := r.Patch(ctx, p, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("patching drain mark of pod %s: %w", p.Name, err)
	}
	log.FromContext(ctx).V(1).Info("Drain mark", "pod", p.Name, "draining", on)
	return nil
}

// scaled records a change of shard k's StatefulSet from one replica count to another in
// the autoscaler's memory and as an event naming the reason.
func (r *AnnIndexReconciler) scaled(ctx context.Context, s *scope, k, from, to int32) {
	r.scaleMemory.changed(shardKey{s.index.Namespace, s.index.Name, k}, time.Now(), from, to)
	reason := annv1alpha1.ReasonScalingUp
	if to < from {
		reason = annv1alpha1.ReasonScalingDown
	}
	msg := fmt.Sprintf("shard %d: %d -> %d replicas, %s", k, from, to, scaleWhy(s, k))
	log.FromContext(ctx).Info("Scaling shard", "shard", k, "from", from, "to", to, "why", scaleWhy(s, k))
	if r.Recorder != nil {
		r.Recorder.Eventf(s.index, nil, corev1.EventTypeNormal, reason, "Scale", "%s", msg)
	}
}

// scaleWhy says in a few words why shard k has the count it is moving to.
func scaleWhy(s *scope, k int32) string {
	as := s.index.Spec.Autoscaling
	lo, hi := replicaBounds(s.index)
	d, ok := s.scale[k]
	switch {
	case !as.Enabled:
		return fmt.Sprintf("autoscaling is off: replicas.min is %d", lo)
	case !ok:
		return fmt.Sprintf("replicas.min is %d", lo)
	case !d.Known:
		why := "no ready pod has a fresh load report"
		if as.Metric == annv1alpha1.AutoscalingCPUUtilization {
			why += " with a CPU rate and a CPU request"
		}
		if d.Desired != d.Current {
			return fmt.Sprintf("%s; replicas must be within [%d, %d]", why, lo, hi)
		}
		return why
	}
	return observedText(as, d.Observed)
}

// observedText is the observed metric against the target: "212 QPS/replica > target 40".
func observedText(as annv1alpha1.AutoscalingSpec, observed float64) string {
	cmp := "="
	switch t := float64(as.Target); {
	case observed > t*(1+tolerance):
		cmp = ">"
	case observed < t*(1-tolerance):
		cmp = "<"
	}
	switch as.Metric {
	case annv1alpha1.AutoscalingCPUUtilization:
		return fmt.Sprintf("%.0f%% CPU %s target %d%%", observed, cmp, as.Target)
	case annv1alpha1.AutoscalingLatencyP99:
		return fmt.Sprintf("p99 %.0f ms %s target %d ms", observed, cmp, as.Target)
	}
	return fmt.Sprintf("%.0f QPS/replica %s target %d", observed, cmp, as.Target)
}
