package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/annshard/annshard/hack/localcluster/cluster"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

const provisionedBy = "pv.kubernetes.io/provisioned-by"

// selectedNode is the annotation the scheduler puts on a claim of a
// WaitForFirstConsumer class once it has chosen the node of the claim's first pod.
const selectedNode = "volume.kubernetes.io/selected-node"

// watchClaims runs the provisioner of the local StorageClass: a claim of the class
// gets a `pvc-<uid>` hostPath volume under <state>/pv with a claimRef, which the PV
// controller then binds; a released volume of ours is deleted with its data (reclaim
// policy Delete). Data outlives pods and StatefulSets, not claims.
//
// The class binds on the first consumer (WaitForFirstConsumer): a claim is provisioned
// only once the scheduler has picked its pod's node and named it in the selected-node
// annotation, and only by the agent of that node; the volume is pinned to the node.
// With Immediate binding a StatefulSet's new pod and its new claim appear together,
// the scheduler finds the claim unbound, marks the pod unschedulable and retries it
// only after a back-off of up to minutes.
// The informers' periodic resync retries whatever failed.
func (a *Agent) watchClaims(f informers.SharedInformerFactory) {
	ctx := context.Background()
	_, _ = f.Core().V1().PersistentVolumeClaims().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.provision(ctx, obj) },
		UpdateFunc: func(_, obj any) { a.provision(ctx, obj) },
	})
	_, _ = f.Core().V1().PersistentVolumes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.reclaim(ctx, obj) },
		UpdateFunc: func(_, obj any) { a.reclaim(ctx, obj) },
	})
}

func claimClass(pvc *corev1.PersistentVolumeClaim) string {
	if pvc.Spec.StorageClassName != nil {
		return *pvc.Spec.StorageClassName
	}
	return pvc.Annotations["volume.beta.kubernetes.io/storage-class"]
}

func (a *Agent) provision(ctx context.Context, obj any) {
	pvc, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok || pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil || claimClass(pvc) != cluster.StorageClassName ||
		pvc.Annotations[selectedNode] != a.cfg.NodeName {
		return
	}
	name := "pvc-" + string(pvc.UID)
	dir := filepath.Join(a.cfg.PVDir(), name)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		a.log.Error("creating volume dir failed", "claim", pvc.Namespace+"/"+pvc.Name, "err", err)
		return
	}
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if size.IsZero() {
		size = resource.MustParse("1Gi")
	}
	modes := pvc.Spec.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	dirType := corev1.HostPathDirectoryOrCreate
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{provisionedBy: cluster.Provisioner}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   modes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              cluster.StorageClassName,
			VolumeMode:                    pvc.Spec.VolumeMode,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &dirType}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{a.cfg.NodeName}}},
			}}}},
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID},
		},
	}
	_, err := a.cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	switch {
	case err == nil:
		a.log.Info("provisioned volume", "claim", pvc.Namespace+"/"+pvc.Name, "volume", name)
	case !apierrors.IsAlreadyExists(err):
		a.log.Error("provisioning volume failed", "claim", pvc.Namespace+"/"+pvc.Name, "err", err)
	}
}

func (a *Agent) reclaim(ctx context.Context, obj any) {
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok || pv.Annotations[provisionedBy] != cluster.Provisioner || pv.Status.Phase != corev1.VolumeReleased ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || pv.Spec.HostPath == nil {
		return
	}
	dir := pv.Spec.HostPath.Path
	// Only ever remove a directory this provisioner made.
	if filepath.Dir(dir) != filepath.Clean(a.cfg.PVDir()) || !strings.HasPrefix(filepath.Base(dir), "pvc-") {
		a.log.Error("refusing to delete volume data outside the PV dir", "volume", pv.Name, "path", dir)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		a.log.Error("deleting volume data failed", "volume", pv.Name, "err", err)
		return
	}
	err := a.cs.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pv.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		a.log.Error("deleting volume failed", "volume", pv.Name, "err", err)
		return
	}
	a.log.Info("deleted released volume", "volume", pv.Name)
}
