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
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
)

func TestIndexMetrics(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := annv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	idx := &annv1alpha1.AnnIndex{
		ObjectMeta: metav1.ObjectMeta{Name: "products", Namespace: "team-a"},
		Spec: annv1alpha1.AnnIndexSpec{Dimension: 8, Shards: 2,
			Autoscaling: annv1alpha1.AutoscalingSpec{Enabled: true, Metric: annv1alpha1.AutoscalingQPSPerReplica, Target: 200}},
		Status: annv1alpha1.AnnIndexStatus{
			Vectors: 700, ReadyShards: 2, RoutingEpoch: 5,
			Conditions: []metav1.Condition{{Type: "Available", Status: "True", Reason: "R", LastTransitionTime: metav1.Now()}},
			Shards: []annv1alpha1.ShardStatus{
				{Shard: 0, Replicas: 3, ReadyReplicas: 2, DesiredReplicas: 4, ObservedMetric: ptr.To[int64](251), Slots: 2048, Vectors: 400},
				{Shard: 1, Replicas: 1, ReadyReplicas: 1, Slots: 2048, Vectors: 300},
			},
			Migrations: []annv1alpha1.MigrationStatus{
				{ID: "a", Phase: annv1alpha1.MigrationCopying, Copied: 120},
				{ID: "b", Phase: annv1alpha1.MigrationCatchingUp, Copied: 30},
				{ID: "c", Phase: annv1alpha1.MigrationDone, Copied: 999},
			},
		},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(idx).Build()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(&IndexMetrics{Reader: c})
	want := `
# HELP annshard_index_shard_replicas_desired Pods the shard should run now (replicas.min or the autoscaler's decision).
# TYPE annshard_index_shard_replicas_desired gauge
annshard_index_shard_replicas_desired{annindex="products",annindex_namespace="team-a",shard="0"} 3
annshard_index_shard_replicas_desired{annindex="products",annindex_namespace="team-a",shard="1"} 1
# HELP annshard_index_shard_autoscaler_desired_replicas Pods the autoscaler decided the shard moves toward (status.shards[k].desiredReplicas); above replicas_desired while a replica is drained.
# TYPE annshard_index_shard_autoscaler_desired_replicas gauge
annshard_index_shard_autoscaler_desired_replicas{annindex="products",annindex_namespace="team-a",shard="0"} 4
annshard_index_shard_autoscaler_desired_replicas{annindex="products",annindex_namespace="team-a",shard="1"} 1
# HELP annshard_index_shard_autoscaler_observed The autoscaling metric the autoscaler last decided on (status.shards[k].observedMetric), labelled with the metric and its target; absent while no pod has a fresh load report.
# TYPE annshard_index_shard_autoscaler_observed gauge
annshard_index_shard_autoscaler_observed{annindex="products",annindex_namespace="team-a",metric="QPSPerReplica",shard="0",target="200"} 251
# HELP annshard_index_shard_replicas_ready Pods of the shard that pass their readiness probe.
# TYPE annshard_index_shard_replicas_ready gauge
annshard_index_shard_replicas_ready{annindex="products",annindex_namespace="team-a",shard="0"} 2
annshard_index_shard_replicas_ready{annindex="products",annindex_namespace="team-a",shard="1"} 1
# HELP annshard_index_migration_copied_records Records copied so far by the migrations in flight, summed; its derivative is the copy rate.
# TYPE annshard_index_migration_copied_records gauge
annshard_index_migration_copied_records{annindex="products",annindex_namespace="team-a"} 150
# HELP annshard_index_condition 1 for the status of each condition the index has now, 0 for the others.
# TYPE annshard_index_condition gauge
annshard_index_condition{annindex="products",annindex_namespace="team-a",status="False",type="Available"} 0
annshard_index_condition{annindex="products",annindex_namespace="team-a",status="True",type="Available"} 1
annshard_index_condition{annindex="products",annindex_namespace="team-a",status="Unknown",type="Available"} 0
`
	if err := testutil.CollectAndCompare(reg, strings.NewReader(want), "annshard_index_shard_replicas_desired",
		"annshard_index_shard_autoscaler_desired_replicas", "annshard_index_shard_autoscaler_observed",
		"annshard_index_shard_replicas_ready", "annshard_index_migration_copied_records", "annshard_index_condition"); err != nil {
		t.Fatal(err)
	}
	// Every phase has a series, also those no migration is in.
	if n := testutil.CollectAndCount(reg, "annshard_index_migrations"); n != len(migrationPhases) {
		t.Fatalf("annshard_index_migrations has %d series, want one per phase (%d)", n, len(migrationPhases))
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP annshard_index_vectors Vectors stored in the index (status.vectors).
# TYPE annshard_index_vectors gauge
annshard_index_vectors{annindex="products",annindex_namespace="team-a"} 700
`), "annshard_index_vectors"); err != nil {
		t.Fatal(err)
	}
}
