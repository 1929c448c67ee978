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
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/kube"
)

const (
	dataVolume = "data"
	dataDir    = "/data"
	// shardGracePeriod covers draining requests, flushing the WAL and writing a snapshot
	// on SIGTERM.
	shardGracePeriod = 60
	// startupPeriod and readyPeriod are short because they sit on the path from a load
	// step to a new replica serving: the kubelet runs readiness probes only once the
	// startup probe passed, and a replica that was still catching up at its first
	// readiness probe waits a whole period for the next. Probing /healthz and /readyz
	// once a second costs the shard server next to nothing. readyFailures*readyPeriod is
	// how long a replica may fail before routers stop sending it queries.
	// startupProbeFailures sets how many failed startup probes a start may take.
	startupPeriod = 1
	readyPeriod   = 1
	readyFailures = 5
)

// A shard server answers its probes once it has loaded its newest snapshot and read the
// WAL after it into its maps (make bench-recovery measures both). The WAL it reads is
// bounded by the snapshot triggers (--snapshot-vectors, --snapshot-wal-bytes), and the
// snapshot by the volume, so the start takes at most startupBaseSeconds plus the volume
// read at startupReadBytesPerSecond: a rate far below what bench-recovery measures on a
// loaded machine (1M x 128, load average 10: a 600 MB snapshot loaded in 3-6 s, 2.1 s of
// CPU, ready in 3.3-6.2 s after kill -9), since a start that outgrows its budget is
// restarted by the kubelet over and over.
const (
	startupBaseSeconds        = 300
	startupReadBytesPerSecond = 16 << 20
)

// startupBudget is how long the start of a shard whose volume is st may take: 940 s for
// 10Gi.
func startupBudget(st annv1alpha1.StorageSpec) time.Duration {
	size := storageSize(st)
	seconds := min(startupBaseSeconds+size.Value()/startupReadBytesPerSecond, math.MaxInt32) // a probe's largest threshold
	return time.Duration(seconds) * time.Second
}

// startupProbeFailures is the startup probe's failure threshold that gives startupBudget.
func startupProbeFailures(st annv1alpha1.StorageSpec) int32 {
	periods := (startupBudget(st) + startupPeriod*time.Second - 1) / (startupPeriod * time.Second)
	return int32(min(periods, math.MaxInt32))
}

// replicaBounds are the [replicas.min, replicas.max] of every shard, made sane for
// objects that did not go through the API server's validation: at least the primary, and
// max never below min.
func replicaBounds(idx *annv1alpha1.AnnIndex) (lo, hi int32) {
	lo = max(idx.Spec.Replicas.Min, 1)
	return lo, max(idx.Spec.Replicas.Max, lo)
}

// runningReplicas is the replica count shard k runs now, read from its StatefulSet (nil
// for a shard not created yet, which starts at replicas.min). The count lives in the
// StatefulSet, not in status, so an index restored from a backup without its status
// keeps the replicas its shards run instead of dropping every shard to replicas.min.
func runningReplicas(idx *annv1alpha1.AnnIndex, sts *appsv1.StatefulSet) int32 {
	lo, _ := replicaBounds(idx)
	if sts == nil || sts.Spec.Replicas == nil {
		return lo
	}
	return *sts.Spec.Replicas
}

// shardPodConfig is every setting that shapes a shard pod; its hash goes on the pod
// template so that an edit of any of them rolls the shard.
type shardPodConfig struct {
	Dimension  int32
	Metric     annv1alpha1.Metric
	HNSW       annv1alpha1.HNSWSpec
	Image      string
	PullPolicy corev1.PullPolicy
	WALSync    annv1alpha1.WALSync
	Resources  corev1.ResourceRequirements
	Scheduling annv1alpha1.Scheduling
}

func shardConfigHash(idx *annv1alpha1.AnnIndex) string {
	ss := idx.Spec.ShardServer
	h := idx.Spec.HNSW
	if h.Quantization == annv1alpha1.QuantizationNone {
		// The default, hashed as the field's absence: indexes made before the field
		// existed keep their hash and do not roll.
		h.Quantization = ""
	}
	return configHash(shardPodConfig{
		Dimension: idx.Spec.Dimension, Metric: idx.Spec.Metric, HNSW: h,
		Image: ss.Image, PullPolicy: ss.ImagePullPolicy, WALSync: ss.WALSync,
		Resources: ss.Resources, Scheduling: ss.Scheduling,
	})
}

// shardArgs are the flags of `shardserver serve` for shard k. --index, --namespace and
// --shard-index let the pod find its routing ConfigMap and the slots it owns; --pod-name
// tells it its ordinal (0 is the primary) and lets a replica find the primary's pod.
func shardArgs(idx *annv1alpha1.AnnIndex, k int32) []string {
	h := idx.Spec.HNSW
	args := []string{
		listenArg(),
		"--data-dir=" + dataDir,
		"--dimension=" + strconv.Itoa(int(idx.Spec.Dimension)),
		"--metric=" + string(idx.Spec.Metric),
		"--m=" + strconv.Itoa(int(h.M)),
		"--ef-construction=" + strconv.Itoa(int(h.EfConstruction)),
		"--ef-search=" + strconv.Itoa(int(h.EfSearch)),
		"--wal-sync=" + string(idx.Spec.ShardServer.WALSync),
		"--token-file=" + tokenDir + "/" + tokenKey,
		"--index=" + idx.Name,
		"--namespace=" + idx.Namespace,
		"--shard-index=" + strconv.Itoa(int(k)),
		"--pod-name=$(POD_NAME)",
	}
	if q := h.Quantization; q != "" && q != annv1alpha1.QuantizationNone {
		// Only when set: None is the shard's default, and pods of indexes that do not
		// quantize keep the arguments they had.
		args = append(args, "--quantization="+string(q))
	}
	return args
}

// listenArg binds the pod's own IP rather than every address: pods that share one network
// namespace (the local cluster runs each pod as a process on its own loopback IP) would
// otherwise collide on the port, and a pod network serves only the pod IP anyway.
// $(POD_IP) is expanded by the kubelet from podIdentityEnv.
func listenArg() string { return fmt.Sprintf("--listen=$(POD_IP):%d", httpPort) }

// podIdentityEnv gives a pod its own name, namespace and IP, which it reports to peers.
func podIdentityEnv() []corev1.EnvVar {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
	}
	return []corev1.EnvVar{field("POD_NAME", "metadata.name"), field("POD_NAMESPACE", "metadata.namespace"), field("POD_IP", "status.podIP")}
}

func httpProbe(path string, period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("http")}},
		PeriodSeconds:    period,
		TimeoutSeconds:   2,
		FailureThreshold: failures,
	}
}

// softAntiAffinity prefers, never requires, nodes without another pod of the same
// selector: a one-node cluster still schedules every replica.
func softAntiAffinity(selector map[string]string) *corev1.PodAntiAffinity {
	return &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
			Weight: 100,
			PodAffinityTerm: corev1.PodAffinityTerm{
				LabelSelector: &metav1.LabelSelector{MatchLabels: selector},
				TopologyKey:   corev1.LabelHostname,
			},
		}},
	}
}

func tokenVolume(idx *annv1alpha1.AnnIndex) corev1.Volume {
	return corev1.Volume{Name: "token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: tokenSecretName(idx), DefaultMode: ptr.To[int32](0o440),
	}}}
}

func containerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		RunAsNonRoot:             ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// defaultStorageSize is the schema's default, for objects that did not go through the
// API server.
var defaultStorageSize = resource.MustParse("10Gi")

func storageSize(st annv1alpha1.StorageSpec) resource.Quantity {
	if st.Size == nil || st.Size.IsZero() {
		return defaultStorageSize
	}
	return *st.Size
}

// shardService is the headless Service of shard k. It publishes not-ready addresses so
// a replica can reach the primary by its stable DNS name while it is still catching up.
func shardService(idx *annv1alpha1.AnnIndex, k int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: shardName(idx, k), Namespace: idx.Namespace, Labels: shardLabels(idx, k)},
		Spec: corev1.ServiceSpec{
			ClusterIP:                corev1.ClusterIPNone,
			PublishNotReadyAddresses: true,
			Selector:                 shardLabels(idx, k),
			Ports:                    []corev1.ServicePort{{Name: "http", Port: httpPort, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}
}

// shardPDB lets voluntary disruptions (drains) take at most one pod of a shard at a time.
func shardPDB(idx *annv1alpha1.AnnIndex, k int32) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: shardName(idx, k), Namespace: idx.Namespace, Labels: shardLabels(idx, k)},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: shardLabels(idx, k)},
		},
	}
}

// shardStatefulSet is the StatefulSet of shard k running replicas pods. Ordinal 0 is the primary; OrderedReady
// starts it first, so replicas find a primary to bootstrap from, and scale-down removes
// the highest ordinal first, never the primary. A scaled-away replica's volume is kept
// (WhenScaled: Retain) so scaling back up does not copy the shard again; deleting the
// index deletes the volumes.
func shardStatefulSet(idx *annv1alpha1.AnnIndex, k, replicas int32) *appsv1.StatefulSet {
	ss := idx.Spec.ShardServer
	sel := shardLabels(idx, k)
	affinity := ss.Scheduling.Affinity.DeepCopy()
	if affinity == nil {
		affinity = &corev1.Affinity{}
	}
	if affinity.PodAntiAffinity == nil {
		affinity.PodAntiAffinity = softAntiAffinity(sel)
	}
	pvc := corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: dataVolume, Labels: shardLabels(idx, k)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ss.Storage.StorageClassName,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: storageSize(ss.Storage)}},
		},
	}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: shardName(idx, k), Namespace: idx.Namespace, Labels: shardLabels(idx, k)},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas),
			ServiceName:         shardName(idx, k),
			Selector:            &metav1.LabelSelector{MatchLabels: sel},
			PodManagementPolicy: appsv1.OrderedReadyPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType},
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType,
				WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{pvc},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      shardLabels(idx, k),
					Annotations: map[string]string{annotationConfigHash: shardConfigHash(idx)},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName:            serviceAccountName(idx, componentShard),
					TerminationGracePeriodSeconds: ptr.To[int64](shardGracePeriod),
					NodeSelector:                  ss.Scheduling.NodeSelector,
					Tolerations:                   ss.Scheduling.Tolerations,
					Affinity:                      affinity,
					SecurityContext: &corev1.PodSecurityContext{
						FSGroup:        ptr.To[int64](65532),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:            "shardserver",
						Image:           ss.Image,
						ImagePullPolicy: ss.ImagePullPolicy,
						Command:         []string{"shardserver", "serve"},
						Args:            shardArgs(idx, k),
						Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: httpPort, Protocol: corev1.ProtocolTCP}},
						Env:             podIdentityEnv(),
						Resources:       ss.Resources,
						ReadinessProbe:  httpProbe("/readyz", readyPeriod, readyFailures),
						LivenessProbe:   httpProbe("/healthz", 10, 3),
						StartupProbe:    httpProbe("/healthz", startupPeriod, startupProbeFailures(ss.Storage)),
						SecurityContext: containerSecurity(),
						VolumeMounts: []corev1.VolumeMount{
							{Name: dataVolume, MountPath: dataDir},
							{Name: "token", MountPath: tokenDir, ReadOnly: true},
						},
					}},
					Volumes: []corev1.Volume{tokenVolume(idx)},
				},
			},
		},
	}
}

// observeShards records every shard StatefulSet of the index (those of shards that left
// the table are kept, never deleted: they may hold data), the pods of each shard and which
// primaries are ready.
func (r *AnnIndexReconciler) observeShards(ctx context.Context, s *scope) (ctrl.Result, error) {
	// The StatefulSets are read from the API server: their spec.replicas is what the
	// replica decision starts from, and a cache that lags behind the last scale would
	// undo it.
	var list appsv1.StatefulSetList
	if err := r.apiReader().List(ctx, &list, client.InNamespace(s.index.Namespace), client.MatchingLabels(componentLabels(s.index, componentShard))); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing shard StatefulSets: %w", err)
	}
	for i := range list.Items {
		sts := &list.Items[i]
		k, err := strconv.Atoi(sts.Labels[labelShard])
		if err != nil || !metav1.IsControlledBy(sts, s.index) {
			continue
		}
		s.shardSets[int32(k)] = sts
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(s.index.Namespace), client.MatchingLabels(componentLabels(s.index, componentShard))); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing shard pods: %w", err)
	}
	for _, p := range pods.Items {
		if k, err := strconv.Atoi(p.Labels[labelShard]); err == nil {
			s.shardPods[int32(k)] = append(s.shardPods[int32(k)], p)
		}
	}
	s.primaryReady = primaryReadiness(s.index, pods.Items)
	return ctrl.Result{}, nil
}

// applyShards applies the Service, StatefulSet and PodDisruptionBudget of every served
// shard (servedShards: those of the routing table and, while a reshard grows the index,
// the new ones). The StatefulSet's replicas step toward the decided count (scaleStep: a
// removal waits for its drain, asking to be called again).
func (r *AnnIndexReconciler) applyShards(ctx context.Context, s *scope) (ctrl.Result, error) {
	var res ctrl.Result
	for k := range servedShards(s) {
		if err := r.apply(ctx, s.index, shardService(s.index, k)); err != nil {
			return res, err
		}
		n, wait, err := r.scaleStep(ctx, s, k)
		res = lowestNonZeroResult(res, wait)
		if err != nil {
			return res, err
		}
		from := runningReplicas(s.index, s.shardSets[k])
		existed := s.shardSets[k] != nil
		sts := shardStatefulSet(s.index, k, n)
		if err := r.apply(ctx, s.index, sts); err != nil {
			return res, err
		}
		s.shardSets[k] = sts
		if existed && n != from {
			r.scaled(ctx, s, k, from, n)
		}
		if err := r.apply(ctx, s.index, shardPDB(s.index, k)); err != nil {
			return res, err
		}
	}
	return res, nil
}

// primaryReadiness says, per shard, whether its primary (ordinal 0) is Ready and not
// being deleted.
func primaryReadiness(idx *annv1alpha1.AnnIndex, pods []corev1.Pod) map[int32]bool {
	out := map[int32]bool{}
	for i := range pods {
		p := &pods[i]
		k, err := strconv.Atoi(p.Labels[labelShard])
		if err != nil || p.Name != shardName(idx, int32(k))+"-0" || p.DeletionTimestamp != nil {
			continue
		}
		if kube.PodReady(p) {
			out[int32(k)] = true
		}
	}
	return out
}
