package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/annshard/annshard/hack/localcluster/cluster"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Node heartbeat: the Lease is what the node-lifecycle controller watches (it marks
// the node unreachable ~40-50 s after the last renewal); the Ready condition is
// refreshed at the same pace because it costs one small PATCH.
const (
	leaseDuration  = 40
	heartbeatEvery = 10 * time.Second
	maxPods        = 110
)

// Agent is the node agent of one local cluster.
type Agent struct {
	cfg         cluster.Config
	cs          kubernetes.Interface
	self        string
	ipam        *ipam
	log         *slog.Logger
	allocatable corev1.ResourceList

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	wg      sync.WaitGroup
}

// Run registers the node and runs its pods until ctx ends, then stops every pod
// process (each within its grace period, capped at MaxShutdownGrace) and returns.
func Run(ctx context.Context, cfg cluster.Config, log *slog.Logger) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding own executable: %w", err)
	}
	rc, err := cfg.RESTConfig()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	pool, err := newIPAM(cfg.PodCIDR)
	if err != nil {
		return err
	}
	a := &Agent{cfg: cfg, cs: cs, self: self, ipam: pool, log: log, workers: map[types.UID]*podWorker{}}
	a.allocatable = nodeResources(cfg.StateDir)
	a.killLeftovers()

	if err := a.registerNode(ctx); err != nil {
		return err
	}
	log.Info("node registered", "node", cfg.NodeName)
	go a.heartbeat(ctx)

	all := informers.NewSharedInformerFactory(cs, 30*time.Second)
	a.watchClaims(all)
	mine := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	}))
	_, err = mine.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.podChanged(ctx, obj) },
		UpdateFunc: func(_, obj any) { a.podChanged(ctx, obj) },
		DeleteFunc: func(obj any) { a.podGone(obj) },
	})
	if err != nil {
		return fmt.Errorf("watching pods: %w", err)
	}
	all.Start(ctx.Done())
	mine.Start(ctx.Done())
	<-ctx.Done()
	log.Info("stopping pods")
	all.Shutdown()
	mine.Shutdown()
	a.wg.Wait()
	return nil
}

// killLeftovers stops pod processes a previous agent left running (it crashed or
// was killed): their pods are started afresh, and two copies must never run.
func (a *Agent) killLeftovers() {
	files, _ := filepath.Glob(filepath.Join(a.cfg.PodPIDDir(), "*.pid"))
	for _, f := range files {
		if pid, ok := cluster.ReadPIDFile(f); ok {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_, _ = cluster.StopPID(pid, time.Second)
			a.log.Info("killed leftover pod process", "file", filepath.Base(f), "pid", pid)
		}
		_ = os.Remove(f)
	}
}

func (a *Agent) podChanged(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if w, ok := a.workers[pod.UID]; ok {
		w.update(pod)
		return
	}
	w := newPodWorker(a, pod)
	a.workers[pod.UID] = w
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		w.run(ctx)
		a.mu.Lock()
		if a.workers[pod.UID] == w {
			delete(a.workers, pod.UID)
		}
		a.mu.Unlock()
	}()
	if pod.DeletionTimestamp != nil {
		w.update(pod)
	}
}

func (a *Agent) podGone(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if w, ok := a.workers[pod.UID]; ok {
		w.remove()
	}
}

// nodeResources is what the node offers: all CPUs, all memory, maxPods pods.
func nodeResources(stateDir string) corev1.ResourceList {
	rl := corev1.ResourceList{
		corev1.ResourceCPU:  *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourcePods: *resource.NewQuantity(maxPods, resource.DecimalSI),
	}
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) == nil {
		rl[corev1.ResourceMemory] = *resource.NewQuantity(int64(si.Totalram)*int64(si.Unit), resource.BinarySI)
	}
	var fs syscall.Statfs_t
	if syscall.Statfs(stateDir, &fs) == nil {
		rl[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(int64(fs.Blocks)*fs.Bsize, resource.BinarySI)
	}
	return rl
}

func (a *Agent) nodeConditions(now metav1.Time) []corev1.NodeCondition {
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return []corev1.NodeCondition{
		cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "local cluster agent"),
		cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "local cluster agent"),
		cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "local cluster agent"),
		cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "local cluster agent is posting ready status"),
	}
}

// registerNode creates the Node with its status in the same request (the scheduler
// needs allocatable pods), or refreshes the status of an existing one. It retries
// until the apiserver answers.
func (a *Agent) registerNode(ctx context.Context) error {
	now := metav1.Now()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Labels: map[string]string{
			"kubernetes.io/hostname": a.cfg.NodeName, "kubernetes.io/os": runtime.GOOS, "kubernetes.io/arch": runtime.GOARCH,
		}},
		Status: corev1.NodeStatus{
			Capacity:    a.allocatable,
			Allocatable: a.allocatable,
			Phase:       corev1.NodeRunning,
			Conditions:  a.nodeConditions(now),
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
				{Type: corev1.NodeHostName, Address: a.cfg.NodeName},
			},
			NodeInfo: corev1.NodeSystemInfo{OperatingSystem: runtime.GOOS, Architecture: runtime.GOARCH,
				KubeletVersion: "v1.36.3-localcluster", ContainerRuntimeVersion: "localcluster://1"},
		},
	}
	for {
		_, err := a.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = a.patchNodeStatus(ctx, &node.Status)
		}
		if err == nil {
			return nil
		}
		a.log.Info("registering node, will retry", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("registering node: %w", errors.Join(ctx.Err(), err))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// patchNodeStatus writes the node status with a direct strategic-merge PATCH
// (conditions merge by type).
func (a *Agent) patchNodeStatus(ctx context.Context, st *corev1.NodeStatus) error {
	body, err := json.Marshal(map[string]any{"status": st})
	if err != nil {
		return fmt.Errorf("encoding node status: %w", err)
	}
	_, err = a.cs.CoreV1().Nodes().Patch(ctx, a.cfg.NodeName, types.StrategicMergePatchType, body, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("patching node status: %w", err)
	}
	return nil
}

// heartbeat renews the node Lease and the Ready condition every heartbeatEvery.
func (a *Agent) heartbeat(ctx context.Context) {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		if err := a.renewLease(ctx); err != nil && ctx.Err() == nil {
			a.log.Info("renewing lease failed", "err", err)
		}
		now := metav1.Now()
		conds := a.nodeConditions(now)
		// Keep the original transition time: only the heartbeat moves.
		if n, err := a.cs.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{}); err == nil {
			for i := range conds {
				for _, old := range n.Status.Conditions {
					if old.Type == conds[i].Type && old.Status == conds[i].Status {
						conds[i].LastTransitionTime = old.LastTransitionTime
					}
				}
			}
		}
		if err := a.patchNodeStatus(ctx, &corev1.NodeStatus{Conditions: conds}); err != nil && ctx.Err() == nil {
			a.log.Info("node heartbeat failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) renewLease(ctx context.Context) error {
	leases := a.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Namespace: corev1.NamespaceNodeLease},
			Spec: coordv1.LeaseSpec{HolderIdentity: ptr(a.cfg.NodeName), LeaseDurationSeconds: ptr(int32(leaseDuration)), RenewTime: &now}}
		if n, err := a.cs.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{}); err == nil {
			l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	l.Spec.HolderIdentity = ptr(a.cfg.NodeName)
	l.Spec.LeaseDurationSeconds = ptr(int32(leaseDuration))
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}
