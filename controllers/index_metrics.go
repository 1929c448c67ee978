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
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
)

// IndexMetrics exports every AnnIndex's status as Prometheus gauges on the operator's
// /metrics, the way kube-state-metrics exports built-in objects: replicas desired and
// ready per shard, vectors, conditions, migrations. Dashboards (charts/annshard/dashboards)
// plot them next to the shard and router pods' own metrics.
//
// It reads the manager's cache at scrape time, so the figures are the status as last
// written, with no state of its own. The labels are annindex and annindex_namespace, not
// namespace: a scrape of the operator pod attaches the pod's own namespace label.
//
// Every family is emitted for every index even when its value is 0 (no migrations in
// flight), so a dashboard query never finds a series missing for lack of activity.
type IndexMetrics struct {
	Reader client.Reader
}

var (
	metricIndexLabels = []string{"annindex_namespace", "annindex"}
	metricShardLabels = append(metricIndexLabels[:2:2], "shard")

	descVectors      = prometheus.NewDesc("annshard_index_vectors", "Vectors stored in the index (status.vectors).", metricIndexLabels, nil)
	descReadyShards  = prometheus.NewDesc("annshard_index_ready_shards", "Shards whose primary is ready.", metricIndexLabels, nil)
	descShardsWanted = prometheus.NewDesc("annshard_index_shards", "Shards the spec asks for.", metricIndexLabels, nil)
	descEpoch        = prometheus.NewDesc("annshard_index_routing_epoch", "Epoch of the routing table in use.", metricIndexLabels, nil)
	descCondition    = prometheus.NewDesc("annshard_index_condition", "1 for the status of each condition the index has now, 0 for the others.",
		append(metricIndexLabels[:2:2], "type", "status"), nil)
	descReplicas = prometheus.NewDesc("annshard_index_shard_replicas_desired", "Pods the shard should run now (replicas.min or the autoscaler's decision).", metricShardLabels, nil)
	descReady    = prometheus.NewDesc("annshard_index_shard_replicas_ready", "Pods of the shard that pass their readiness probe.", metricShardLabels, nil)
	descSlots    = prometheus.NewDesc("annshard_index_shard_slots", "Hash slots the routing table gives the shard.", metricShardLabels, nil)
	descShardVec = prometheus.NewDesc("annshard_index_shard_vectors", "Vectors the shard's primary holds.", metricShardLabels, nil)
	descDesired  = prometheus.NewDesc("annshard_index_shard_autoscaler_desired_replicas",
		"Pods the autoscaler decided the shard moves toward (status.shards[k].desiredReplicas); above replicas_desired while a replica is drained.", metricShardLabels, nil)
	descObserved = prometheus.NewDesc("annshard_index_shard_autoscaler_observed",
		"The autoscaling metric the autoscaler last decided on (status.shards[k].observedMetric), labelled with the metric and its target; absent while no pod has a fresh load report.",
		append(metricShardLabels[:3:3], "metric", "target"), nil)
	descMigr   = prometheus.NewDesc("annshard_index_migrations", "Slot migrations in status by phase.", append(metricIndexLabels[:2:2], "phase"), nil)
	descCopied = prometheus.NewDesc("annshard_index_migration_copied_records",
		"Records copied so far by the migrations in flight, summed; its derivative is the copy rate.", metricIndexLabels, nil)
)

// Describe implements prometheus.Collector.
func (m *IndexMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descVectors, descReadyShards, descShardsWanted, descEpoch, descCondition,
		descReplicas, descReady, descSlots, descShardVec, descDesired, descObserved, descMigr, descCopied} {
		ch <- d
	}
}

// migrationPhases are every phase, so each gets a series (0 when no migration is in it).
var migrationPhases = []annv1alpha1.MigrationPhase{annv1alpha1.MigrationPending, annv1alpha1.MigrationCopying,
	annv1alpha1.MigrationCatchingUp, annv1alpha1.MigrationHandoff, annv1alpha1.MigrationCleanup,
	annv1alpha1.MigrationDone, annv1alpha1.MigrationFailed}

// Collect implements prometheus.Collector.
func (m *IndexMetrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list annv1alpha1.AnnIndexList
	if err := m.Reader.List(ctx, &list); err != nil {
		log.FromContext(ctx).Error(err, "Listing AnnIndexes for metrics")
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for i := range list.Items {
		idx := &list.Items[i]
		ns, name := idx.Namespace, idx.Name
		st := &idx.Status
		gauge(descVectors, float64(st.Vectors), ns, name)
		gauge(descReadyShards, float64(st.ReadyShards), ns, name)
		gauge(descShardsWanted, float64(idx.Spec.Shards), ns, name)
		gauge(descEpoch, float64(st.RoutingEpoch), ns, name)
		for _, c := range st.Conditions {
			for _, s := range []string{"True", "False", "Unknown"} {
				gauge(descCondition, boolValue(string(c.Status) == s), ns, name, c.Type, s)
			}
		}
		for _, sh := range st.Shards {
			k := strconv.Itoa(int(sh.Shard))
			gauge(descReplicas, float64(sh.Replicas), ns, name, k)
			gauge(descReady, float64(sh.ReadyReplicas), ns, name, k)
			gauge(descSlots, float64(sh.Slots), ns, name, k)
			gauge(descShardVec, float64(sh.Vectors), ns, name, k)
			desired := sh.DesiredReplicas
			if desired == 0 { // a status written before the field existed
				desired = sh.Replicas
			}
			gauge(descDesired, float64(desired), ns, name, k)
			if sh.ObservedMetric != nil {
				as := idx.Spec.Autoscaling
				gauge(descObserved, float64(*sh.ObservedMetric), ns, name, k, string(as.Metric), strconv.Itoa(int(as.Target)))
			}
		}
		byPhase := map[annv1alpha1.MigrationPhase]int{}
		var copied int64
		for _, mg := range st.Migrations {
			byPhase[mg.Phase]++
			if mg.Phase != annv1alpha1.MigrationDone && mg.Phase != annv1alpha1.MigrationFailed {
				copied += mg.Copied
			}
		}
		for _, p := range migrationPhases {
			gauge(descMigr, float64(byPhase[p]), ns, name, string(p))
		}
		gauge(descCopied, float64(copied), ns, name)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
