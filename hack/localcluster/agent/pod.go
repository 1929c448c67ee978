package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// MaxShutdownGrace caps each pod's grace period when the agent itself stops, so
// `down` stays quick; pods being deleted get their full grace period.
const MaxShutdownGrace = 10 * time.Second

// volumeRefresh is how often Secrets, ConfigMaps and tokens are re-rendered.
const volumeRefresh = 15 * time.Second

// podWorker owns one pod: its IP, volumes, containers and status. Only run's
// goroutine changes its fields after setup; update and changed may be called from
// anywhere.
type podWorker struct {
	a   *Agent
	key string // namespace/name, for logs

	mu     sync.Mutex
	latest *corev1.Pod
	gone   bool
	signal chan struct{}
	dirty  chan struct{}

	// initial is the pod as first seen: containers read its spec, which is immutable
	// apart from fields the agent does not act on.
	initial *corev1.Pod
	dir     string
	// volMu serialises volume rendering (setup, refresh) and reading its paths.
	volMu sync.Mutex
	vols  podVolumes
	// Guarded by mu: written by setup, read by status and probes.
	ip       string
	setupErr error

	// Owned by run.
	pod         *corev1.Pod
	initCs      []*container
	cs          []*container
	startTime   metav1.Time
	transitions map[corev1.PodConditionType]corev1.PodCondition
	lastPatch   []byte
}

func newPodWorker(a *Agent, pod *corev1.Pod) *podWorker {
	dir := filepath.Join(a.cfg.PodsDir(), string(pod.UID))
	return &podWorker{a: a, key: pod.Namespace + "/" + pod.Name, latest: pod, pod: pod, initial: pod,
		signal: make(chan struct{}, 1), dirty: make(chan struct{}, 1),
		dir: dir, vols: podVolumes{dir: filepath.Join(dir, "volumes")},
		transitions: map[corev1.PodConditionType]corev1.PodCondition{}}
}

func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.latest = pod
	w.mu.Unlock()
	notify(w.signal)
}

func (w *podWorker) remove() {
	w.mu.Lock()
	w.gone = true
	w.mu.Unlock()
	notify(w.signal)
}

func (w *podWorker) changed() { notify(w.dirty) }

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (w *podWorker) current() (*corev1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest, w.gone
}

// grace is the pod's termination grace period: the one the deletion set, else the spec's.
func (w *podWorker) grace() time.Duration {
	if s := w.pod.DeletionGracePeriodSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	return specGrace(w.pod)
}

func specGrace(pod *corev1.Pod) time.Duration {
	if s := pod.Spec.TerminationGracePeriodSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	return 30 * time.Second
}

func terminal(p corev1.PodPhase) bool { return p == corev1.PodSucceeded || p == corev1.PodFailed }

// run drives the pod from setup to final deletion.
func (w *podWorker) run(ctx context.Context) {
	w.startTime = metav1.Now()
	if w.pod.Status.StartTime != nil {
		w.startTime = *w.pod.Status.StartTime
	}
	active := !terminal(w.pod.Status.Phase) && w.pod.DeletionTimestamp == nil
	var starter sync.WaitGroup
	if active {
		w.setupAndStart(ctx, &starter)
	}
	refresh := time.NewTicker(volumeRefresh)
	defer refresh.Stop()
	for {
		select {
		case <-w.signal:
			pod, gone := w.current()
			w.pod = pod
			if gone || pod.DeletionTimestamp != nil {
				grace := w.grace()
				if gone {
					grace = min(grace, 2*time.Second)
				}
				w.stopAll(grace, &starter)
				// Clean up before the final delete, so whoever sees the pod gone also
				// sees its directory gone (the claim's data lives elsewhere).
				w.cleanup()
				if !gone {
					w.finalDelete(ctx)
				}
				return
			}
			// Before the first patch, the pending one carries our status anyway.
			if active && w.lastPatch != nil && w.needsPatch(w.desiredStatus()) {
				w.changed()
			}
		case <-w.dirty:
			if active {
				w.patchStatus(ctx)
			}
		case <-refresh.C:
			if active && w.sandboxReady() {
				w.volMu.Lock()
				if err := w.a.prepare(ctx, w.pod, &w.vols); err != nil {
					w.a.log.Info("refreshing volumes failed", "pod", w.key, "err", err)
				}
				w.volMu.Unlock()
			}
		case <-ctx.Done():
			w.stopAll(min(w.grace(), MaxShutdownGrace), &starter)
			w.a.ipam.release(w.pod.UID)
			return
		}
	}
}

// setupAndStart allocates the IP, prepares volumes (retrying until they can be, e.g.
// a claim binds) and starts the containers: init containers one after another, then
// the others together.
func (w *podWorker) setupAndStart(ctx context.Context, starter *sync.WaitGroup) {
	prev := map[string]*corev1.ContainerStatus{}
	for i := range w.pod.Status.ContainerStatuses {
		prev[w.pod.Status.ContainerStatuses[i].Name] = &w.pod.Status.ContainerStatuses[i]
	}
	for _, c := range w.pod.Spec.InitContainers {
		w.initCs = append(w.initCs, newContainer(w, c, true, nil))
	}
	for _, c := range w.pod.Spec.Containers {
		w.cs = append(w.cs, newContainer(w, c, false, prev[c.Name]))
	}
	starter.Add(1)
	go func() {
		defer starter.Done()
		if !w.setup(ctx) {
			return
		}
		for _, c := range w.initCs {
			c.launched = true
			go c.run(ctx)
			<-c.done
			st := c.status()
			if c.stopped() || st.State.Terminated == nil || st.State.Terminated.ExitCode != 0 {
				return
			}
		}
		for _, c := range w.cs {
			c.launched = true
			go c.run(ctx)
		}
	}()
}

// setup retries until the pod's sandbox (IP, directories, volumes) is ready, or the
// pod goes away. It reports whether containers may start.
func (w *podWorker) setup(ctx context.Context) bool {
	backoff := 200 * time.Millisecond
	for {
		err := w.trySetup(ctx)
		w.mu.Lock()
		w.setupErr = err
		w.mu.Unlock()
		w.changed()
		if err == nil {
			return true
		}
		w.a.log.Info("pod setup failed, retrying", "pod", w.key, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-w.cs0stop():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// cs0stop is closed when the pod is being stopped before it started.
func (w *podWorker) cs0stop() <-chan struct{} {
	if len(w.cs) > 0 {
		return w.cs[0].stopCh
	}
	return nil
}

func (w *podWorker) trySetup(ctx context.Context) error {
	pod := w.initial
	ip := w.podIP()
	if ip == "" {
		if pod.Spec.HostNetwork {
			ip = "127.0.0.1"
		} else {
			var err error
			if ip, err = w.a.ipam.allocate(pod.UID, pod.Status.PodIP); err != nil {
				return err
			}
		}
		w.mu.Lock()
		w.ip = ip
		w.mu.Unlock()
	}
	w.volMu.Lock()
	defer w.volMu.Unlock()
	w.vols.ip = ip
	if err := os.MkdirAll(w.vols.dir, 0o755); err != nil {
		return fmt.Errorf("creating pod dir: %w", err)
	}
	return w.a.prepare(ctx, pod, &w.vols)
}

func (w *podWorker) podIP() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ip
}

func (w *podWorker) sandboxReady() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ip != "" && w.setupErr == nil
}

// volumePath is the host path of a prepared volume.
func (w *podWorker) volumePath(name string) (string, bool) {
	w.volMu.Lock()
	defer w.volMu.Unlock()
	p, ok := w.vols.paths[name]
	return p, ok
}

// stopAll stops every container with grace and waits for them and the starter.
func (w *podWorker) stopAll(grace time.Duration, starter *sync.WaitGroup) {
	all := append(append([]*container{}, w.initCs...), w.cs...)
	for _, c := range all {
		c.stop(grace)
	}
	starter.Wait()
	for _, c := range all {
		// launched was written by the starter, which starter.Wait orders before us.
		if c.launched {
			<-c.done
		}
	}
}

// finalDelete removes the pod object once its processes are gone, as the kubelet
// does: grace period 0 and a UID precondition so a new pod of the same name (a
// StatefulSet's replacement) is never deleted by mistake.
func (w *podWorker) finalDelete(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	uid := w.pod.UID
	err := w.a.cs.CoreV1().Pods(w.pod.Namespace).Delete(ctx, w.pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr(int64(0)), Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		w.a.log.Error("deleting pod failed", "pod", w.key, "err", err)
		return
	}
	w.a.log.Info("pod deleted", "pod", w.key)
}

func (w *podWorker) cleanup() {
	w.a.ipam.release(w.pod.UID)
	if err := os.RemoveAll(w.dir); err != nil {
		w.a.log.Error("removing pod dir failed", "pod", w.key, "err", err)
	}
}

// desiredStatus is the pod status the agent reports, built from its containers.
func (w *podWorker) desiredStatus() corev1.PodStatus {
	w.mu.Lock()
	setupErr, ip := w.setupErr, w.ip
	w.mu.Unlock()
	st := corev1.PodStatus{HostIP: "127.0.0.1", HostIPs: []corev1.HostIP{{IP: "127.0.0.1"}}, StartTime: &w.startTime}
	if ip != "" {
		st.PodIP, st.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	}
	sandbox := setupErr == nil && ip != ""
	initDone := sandbox
	for _, c := range w.initCs {
		s := c.status()
		st.InitContainerStatuses = append(st.InitContainerStatuses, s)
		if s.State.Terminated == nil || s.State.Terminated.ExitCode != 0 {
			initDone = false
		}
	}
	allReady, allStarted, anyRunning, allFinal, anyFailed := true, true, false, true, false
	for _, c := range w.cs {
		s := c.status()
		if !sandbox && s.State.Waiting != nil && setupErr != nil {
			s.State.Waiting.Message = setupErr.Error()
		}
		st.ContainerStatuses = append(st.ContainerStatuses, s)
		allReady = allReady && s.Ready
		if s.State.Running != nil {
			anyRunning = true
		}
		if s.State.Running == nil && s.State.Terminated == nil && s.LastTerminationState.Terminated == nil {
			allStarted = false
		}
		final := s.State.Terminated != nil && (c.stopped() || !c.restarts(s.State.Terminated.ExitCode))
		allFinal = allFinal && final
		anyFailed = anyFailed || (final && s.State.Terminated.ExitCode != 0)
	}
	initFailed := false
	for _, s := range st.InitContainerStatuses {
		if s.State.Terminated != nil && s.State.Terminated.ExitCode != 0 && w.pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
			initFailed = true
		}
	}
	switch {
	case initFailed || (allFinal && anyFailed && len(w.cs) > 0):
		st.Phase = corev1.PodFailed
	case allFinal && len(w.cs) > 0:
		st.Phase = corev1.PodSucceeded
	case initDone && allStarted && (anyRunning || len(w.cs) > 0):
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}
	ready := allReady && anyRunning
	for _, g := range w.pod.Spec.ReadinessGates {
		ok := false
		for _, c := range w.pod.Status.Conditions {
			if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
				ok = true
			}
		}
		ready = ready && ok
	}
	st.Conditions = []corev1.PodCondition{
		w.condition(corev1.PodReadyToStartContainers, sandbox, ""),
		w.condition(corev1.PodInitialized, initDone, "ContainersNotInitialized"),
		w.condition(corev1.ContainersReady, allReady && anyRunning, "ContainersNotReady"),
		w.condition(corev1.PodReady, ready, "ContainersNotReady"),
	}
	return st
}

// condition keeps lastTransitionTime across calls until the status flips.
func (w *podWorker) condition(t corev1.PodConditionType, ok bool, falseReason string) corev1.PodCondition {
	status := corev1.ConditionFalse
	reason := falseReason
	if ok {
		status, reason = corev1.ConditionTrue, ""
	}
	prev, seen := w.transitions[t]
	if !seen {
		for _, c := range w.pod.Status.Conditions {
			if c.Type == t {
				prev, seen = c, true
			}
		}
	}
	c := corev1.PodCondition{Type: t, Status: status, Reason: reason, LastTransitionTime: metav1.Now()}
	if seen && prev.Status == status {
		c.LastTransitionTime = prev.LastTransitionTime
	}
	w.transitions[t] = c
	return c
}

// needsPatch is true when the pod's observed status disagrees with want in a way
// that matters, e.g. the node controller marked it not ready after a lost lease.
func (w *podWorker) needsPatch(want corev1.PodStatus) bool {
	got := w.pod.Status
	if got.Phase != want.Phase || got.PodIP != want.PodIP {
		return true
	}
	for _, wc := range want.Conditions {
		found := false
		for _, gc := range got.Conditions {
			if gc.Type == wc.Type {
				found = gc.Status == wc.Status
			}
		}
		if !found {
			return true
		}
	}
	return false
}

// patchStatus writes the status with a direct strategic-merge PATCH of the status
// subresource (no GET first), carrying the UID as a precondition.
func (w *podWorker) patchStatus(ctx context.Context) {
	want := w.desiredStatus()
	body, err := statusPatch(w.pod.UID, want)
	if err != nil {
		w.a.log.Error("encoding status failed", "pod", w.key, "err", err)
		return
	}
	if string(body) == string(w.lastPatch) && !w.needsPatch(want) {
		return
	}
	_, err = w.a.cs.CoreV1().Pods(w.pod.Namespace).Patch(ctx, w.pod.Name, types.StrategicMergePatchType, body, metav1.PatchOptions{}, "status")
	if err != nil {
		if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			w.a.log.Info("patching pod status failed, will retry", "pod", w.key, "err", err)
			time.AfterFunc(time.Second, w.changed)
		}
		return
	}
	w.lastPatch = body
}

// statusPatch encodes a strategic-merge patch of the status. Conditions merge by
// type, so a reason or message that no longer applies must be deleted explicitly
// with null; encoding/json's omitempty would leave the stale one in place.
func statusPatch(uid types.UID, st corev1.PodStatus) ([]byte, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encoding status: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decoding status: %w", err)
	}
	conds, _ := m["conditions"].([]any)
	for _, c := range conds {
		if cm, ok := c.(map[string]any); ok {
			for _, k := range []string{"reason", "message"} {
				if _, set := cm[k]; !set {
					cm[k] = nil
				}
			}
		}
	}
	return json.Marshal(map[string]any{"metadata": map[string]any{"uid": uid}, "status": m})
}

func writeJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", path, err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
