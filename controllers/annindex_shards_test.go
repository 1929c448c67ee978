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
	"flag"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/slots"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/")

// testIndex is a fully defaulted index, as the API server would store it.
func testIndex() *annv1alpha1.AnnIndex {
	return &annv1alpha1.AnnIndex{
		ObjectMeta: metav1.ObjectMeta{Name: "products", Namespace: "search", UID: "uid-1", Generation: 1},
		Spec: annv1alpha1.AnnIndexSpec{
			Dimension: 128, Metric: annv1alpha1.MetricL2, Shards: 4,
			Replicas: annv1alpha1.ReplicaRange{Min: 1, Max: 6},
			HNSW:     annv1alpha1.HNSWSpec{M: 16, EfConstruction: 200, EfSearch: 64},
			ShardServer: annv1alpha1.ShardServerSpec{
				Image:   "annshard/shardserver:v0.1.0",
				Storage: annv1alpha1.StorageSpec{Size: ptr.To(resource.MustParse("10Gi")), StorageClassName: ptr.To("standard")},
				WALSync: annv1alpha1.WALSyncAlways,
			},
			Router: annv1alpha1.RouterSpec{
				Replicas: 2, LoadBalancing: annv1alpha1.LoadBalancingAdaptive,
				HedgeAfterPercentile: ptr.To[int32](95), CacheEntries: ptr.To[int32](10000),
			},
			Autoscaling: annv1alpha1.AutoscalingSpec{Metric: annv1alpha1.AutoscalingQPSPerReplica, Target: 200},
		},
	}
}

// golden compares obj's YAML with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, obj any) {
	t.Helper()
	got, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run go test ./controllers -run %s -update): %v", t.Name(), err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the golden file; if the change is intended, run go test ./controllers -run %s -update\ngot:\n%s", path, t.Name(), got)
	}
}

func TestShardStatefulSetGolden(t *testing.T) {
	golden(t, "shard_statefulset.yaml", shardStatefulSet(testIndex(), 2, 1))
}

func TestShardServiceAndPDBGolden(t *testing.T) {
	golden(t, "shard_service.yaml", shardService(testIndex(), 2))
	golden(t, "shard_pdb.yaml", shardPDB(testIndex(), 2))
}

func TestMaxShardsMatchesSlots(t *testing.T) {
	if annv1alpha1.MaxShards != slots.MaxShards {
		t.Fatalf("api MaxShards = %d, slots.MaxShards = %d: the CRD bound and the routing table disagree", annv1alpha1.MaxShards, slots.MaxShards)
	}
}

// TestDecideReplicas checks the replica count decided without load: replicas.min with
// autoscaling off, else what the StatefulSet runs, moving into [min, max] (down one
// replica at a time). Status plays no part,
// so an index whose status was lost keeps what its shards run.
func TestDecideReplicas(t *testing.T) {
	tests := []struct {
		name        string
		min, max    int32
		autoscaling bool
		running     int32 // the StatefulSet's spec.replicas, 0 for no StatefulSet
		status      int32 // status.shards[k].replicas, 0 for none
		want        int32
	}{
		{"min when autoscaling is off", 2, 5, false, 4, 4, 2},
		{"min for a new shard", 2, 5, true, 0, 0, 2},
		{"what the StatefulSet runs", 2, 5, true, 4, 4, 4},
		{"a lost status keeps what the StatefulSet runs", 2, 5, true, 4, 0, 4},
		{"status does not override the StatefulSet", 2, 5, true, 3, 5, 3},
		{"below min is raised", 2, 5, true, 1, 0, 2},
		{"above max steps down, one replica at a time", 2, 5, true, 9, 0, 8},
		{"max below min never goes under min", 3, 1, true, 0, 0, 3},
		{"zero min still runs the primary", 0, 0, false, 0, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := testIndex()
			idx.Spec.Shards = 2
			idx.Spec.Replicas = annv1alpha1.ReplicaRange{Min: tt.min, Max: tt.max}
			idx.Spec.Autoscaling.Enabled = tt.autoscaling
			if tt.status > 0 {
				idx.Status.Shards = []annv1alpha1.ShardStatus{{Shard: 0, Replicas: 99}, {Shard: 1, Replicas: tt.status}}
			}
			s := newScope(idx)
			s.table = ptr.To(slots.Even(2))
			s.shardSets[0] = shardStatefulSet(idx, 0, 7)
			if tt.running > 0 {
				s.shardSets[1] = shardStatefulSet(idx, 1, tt.running)
			}
			if _, err := (&AnnIndexReconciler{}).decideReplicas(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			if got := s.replicas[1]; got != tt.want {
				t.Fatalf("decided %d replicas, want %d", got, tt.want)
			}
		})
	}
}

// TestShardConfigHashRolls checks which edits change the pod template hash: everything
// the pods are started with does, the replica count and router settings do not.
func TestShardConfigHashRolls(t *testing.T) {
	base := shardStatefulSet(testIndex(), 0, 1).Spec.Template.Annotations[annotationConfigHash]
	tests := []struct {
		name  string
		edit  func(*annv1alpha1.AnnIndex)
		rolls bool
	}{
		{"efSearch", func(i *annv1alpha1.AnnIndex) { i.Spec.HNSW.EfSearch = 100 }, true},
		{"m", func(i *annv1alpha1.AnnIndex) { i.Spec.HNSW.M = 32 }, true},
		{"image", func(i *annv1alpha1.AnnIndex) { i.Spec.ShardServer.Image = "x:2" }, true},
		{"walSync", func(i *annv1alpha1.AnnIndex) { i.Spec.ShardServer.WALSync = annv1alpha1.WALSyncInterval }, true},
		{"resources", func(i *annv1alpha1.AnnIndex) {
			i.Spec.ShardServer.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}
		}, true},
		{"nodeSelector", func(i *annv1alpha1.AnnIndex) {
			i.Spec.ShardServer.Scheduling.NodeSelector = map[string]string{"a": "b"}
		}, true},
		{"quantization Int8", func(i *annv1alpha1.AnnIndex) { i.Spec.HNSW.Quantization = annv1alpha1.QuantizationInt8 }, true},
		{"quantization None (the default)", func(i *annv1alpha1.AnnIndex) { i.Spec.HNSW.Quantization = annv1alpha1.QuantizationNone }, false},
		{"replicas", func(i *annv1alpha1.AnnIndex) { i.Spec.Replicas.Min = 3 }, false},
		{"router policy", func(i *annv1alpha1.AnnIndex) { i.Spec.Router.LoadBalancing = annv1alpha1.LoadBalancingRoundRobin }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := testIndex()
			tt.edit(idx)
			got := shardStatefulSet(idx, 0, 1).Spec.Template.Annotations[annotationConfigHash]
			if (got != base) != tt.rolls {
				t.Fatalf("hash changed = %v, want %v", got != base, tt.rolls)
			}
		})
	}
}

func TestShardArgsQuantization(t *testing.T) {
	idx := testIndex()
	if args := shardArgs(idx, 0); slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--quantization") }) {
		t.Fatalf("default index passes %v", args)
	}
	idx.Spec.HNSW.Quantization = annv1alpha1.QuantizationInt8
	if args := shardArgs(idx, 0); !slices.Contains(args, "--quantization=Int8") {
		t.Fatalf("Int8 index passes %v", args)
	}
}

func TestShardStatefulSetShape(t *testing.T) {
	idx := testIndex()
	sts := shardStatefulSet(idx, 3, 3)
	pod := sts.Spec.Template.Spec
	c := pod.Containers[0]
	checks := []struct {
		name string
		ok   bool
	}{
		{"name", sts.Name == "products-shard-3" && sts.Spec.ServiceName == "products-shard-3"},
		{"replicas", *sts.Spec.Replicas == 3},
		{"selector matches template", labelsMatch(sts.Spec.Selector.MatchLabels, sts.Spec.Template.Labels)},
		{"shard label", sts.Labels[labelShard] == "3" && sts.Spec.Template.Labels[labelShard] == "3"},
		{"command", strings.Join(c.Command, " ") == "shardserver serve"},
		{"token flag", slices.Contains(c.Args, "--token-file=/etc/annshard/token/token")},
		{"identity flags", slices.Contains(c.Args, "--index=products") && slices.Contains(c.Args, "--namespace=search") && slices.Contains(c.Args, "--shard-index=3") && slices.Contains(c.Args, "--pod-name=$(POD_NAME)") && slices.Contains(c.Args, "--listen=$(POD_IP):8080")},
		{"env", len(c.Env) == 3 && c.Env[2].Name == "POD_IP" && c.Env[2].ValueFrom.FieldRef.FieldPath == "status.podIP"},
		{"probes", c.ReadinessProbe.HTTPGet.Path == "/readyz" && c.LivenessProbe.HTTPGet.Path == "/healthz" &&
			c.StartupProbe.HTTPGet.Path == "/healthz" && c.StartupProbe.PeriodSeconds*c.StartupProbe.FailureThreshold == 940},
		{"retention", sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted == appsv1.DeletePersistentVolumeClaimRetentionPolicyType &&
			sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenScaled == appsv1.RetainPersistentVolumeClaimRetentionPolicyType},
		{"soft anti-affinity only", pod.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil &&
			len(pod.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 1},
		{"volume claim", sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String() == "10Gi" &&
			*sts.Spec.VolumeClaimTemplates[0].Spec.StorageClassName == "standard"},
		{"token volume", pod.Volumes[0].Secret.SecretName == "products-token"},
		{"service account", pod.ServiceAccountName == "products-shard"},
	}
	for _, ch := range checks {
		t.Run(ch.name, func(t *testing.T) {
			if !ch.ok {
				t.Fatalf("StatefulSet check %q failed", ch.name)
			}
		})
	}
}

func TestShardStatefulSetUserAffinityWins(t *testing.T) {
	idx := testIndex()
	user := &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{TopologyKey: "zone"}}}
	idx.Spec.ShardServer.Scheduling.Affinity = &corev1.Affinity{PodAntiAffinity: user}
	got := shardStatefulSet(idx, 0, 1).Spec.Template.Spec.Affinity.PodAntiAffinity
	if len(got.PreferredDuringSchedulingIgnoredDuringExecution) != 0 || got.RequiredDuringSchedulingIgnoredDuringExecution[0].TopologyKey != "zone" {
		t.Fatalf("user anti-affinity replaced: %+v", got)
	}
	if idx.Spec.ShardServer.Scheduling.Affinity.NodeAffinity != nil {
		t.Fatal("builder mutated the spec")
	}
}

func TestStorageSizeDefault(t *testing.T) {
	for _, tt := range []struct {
		name string
		size *resource.Quantity
		want string
	}{
		{"unset", nil, "10Gi"},
		{"zero", ptr.To(resource.MustParse("0")), "10Gi"},
		{"set", ptr.To(resource.MustParse("50Gi")), "50Gi"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := storageSize(annv1alpha1.StorageSpec{Size: tt.size})
			if got := q.String(); got != tt.want {
				t.Fatalf("storageSize = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPrimaryReadiness(t *testing.T) {
	idx := testIndex()
	pod := func(name, shard string, ready corev1.ConditionStatus, deleting bool) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{labelShard: shard}}}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
		if deleting {
			p.DeletionTimestamp = &metav1.Time{}
		}
		return p
	}
	got := primaryReadiness(idx, []corev1.Pod{
		pod("products-shard-0-0", "0", corev1.ConditionTrue, false),
		pod("products-shard-1-0", "1", corev1.ConditionFalse, false),
		pod("products-shard-1-1", "1", corev1.ConditionTrue, false), // a replica is not the primary
		pod("products-shard-2-0", "2", corev1.ConditionTrue, true),  // terminating
		pod("products-shard-3-0", "x", corev1.ConditionTrue, false), // bad label
	})
	want := map[int32]bool{0: true}
	if len(got) != len(want) || !got[0] {
		t.Fatalf("primaryReadiness = %v, want %v", got, want)
	}
}

func labelsMatch(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestStartupProbeFailures: the start-up budget grows with the volume the newest
// snapshot is bounded by, never below the base, up to the largest threshold.
func TestStartupProbeFailures(t *testing.T) {
	q := func(s string) *resource.Quantity { v := resource.MustParse(s); return &v }
	for _, tt := range []struct {
		size    *resource.Quantity
		seconds int64
	}{
		{nil, 300 + 640},
		{q("1Mi"), 300},
		{q("1Gi"), 300 + 64},
		{q("100Gi"), 300 + 6400},
		{q("1Ei"), math.MaxInt32}, // the threshold's largest value
	} {
		if got := int64(startupProbeFailures(annv1alpha1.StorageSpec{Size: tt.size})) * startupPeriod; got != tt.seconds {
			t.Errorf("size %v: %d s, want %d s", tt.size, got, tt.seconds)
		}
	}
}
