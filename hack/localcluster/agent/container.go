package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/annshard/annshard/hack/localcluster/cluster"
	"github.com/annshard/annshard/hack/localcluster/podinit"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Restart back-off: doubles from backoffMin to backoffMax and starts over once a
// container has run for backoffReset. Shorter than a kubelet's (10 s to 5 min)
// because a local cluster is for iterating quickly.
const (
	backoffMin   = time.Second
	backoffMax   = time.Minute
	backoffReset = time.Minute
)

// container runs one container of a pod: start, probes, restarts. Its status is
// guarded by mu; the worker reads it to build the pod's status.
type container struct {
	w      *podWorker
	spec   corev1.Container
	isInit bool

	mu  sync.Mutex
	st  corev1.ContainerStatus
	pid int      // of the running process, for exec probes
	env []string // the process's environment, for exec probes

	stopOnce sync.Once
	stopCh   chan struct{}
	grace    time.Duration // set before stopCh closes
	done     chan struct{}
	logged   bool // the log was truncated for this pod already
	launched bool // run was started; set by the pod's starter goroutine
	pod      *corev1.Pod
}

func newContainer(w *podWorker, spec corev1.Container, isInit bool, prev *corev1.ContainerStatus) *container {
	c := &container{w: w, pod: w.initial, spec: spec, isInit: isInit, stopCh: make(chan struct{}), done: make(chan struct{})}
	reason := reasonContainerCrt
	if !isInit && len(c.pod.Spec.InitContainers) > 0 {
		reason = reasonPodInit
	}
	c.st = corev1.ContainerStatus{Name: spec.Name, Image: spec.Image, ImageID: "localcluster://" + imageRepo(spec.Image),
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}, Started: ptr(false)}
	if prev != nil {
		// A container that ran before an agent restart starts again: count it.
		c.st.RestartCount = prev.RestartCount
		if prev.State.Running != nil || prev.State.Terminated != nil {
			c.st.RestartCount++
		}
	}
	return c
}

func ptr[T any](v T) *T { return &v }

func (c *container) status() corev1.ContainerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return *c.st.DeepCopy()
}

func (c *container) update(f func(st *corev1.ContainerStatus)) {
	c.mu.Lock()
	f(&c.st)
	c.mu.Unlock()
	c.w.changed()
}

// probeUpdate is update for probe results: it drops the result when the probes'
// context has ended, checked under the lock, so a probe that finishes just after
// its process exited can never mark the terminated container ready or started.
func (c *container) probeUpdate(ctx context.Context, f func(st *corev1.ContainerStatus) (changed bool)) {
	c.mu.Lock()
	changed := ctx.Err() == nil && f(&c.st)
	c.mu.Unlock()
	if changed {
		c.w.changed()
	}
}

// stop asks the runner to stop the process (SIGTERM, grace, SIGKILL) and not restart.
func (c *container) stop(grace time.Duration) {
	c.stopOnce.Do(func() {
		c.grace = grace
		close(c.stopCh)
	})
}

func (c *container) stopped() bool {
	select {
	case <-c.stopCh:
		return true
	default:
		return false
	}
}

// sleep waits d unless the container is stopped first; it reports whether d passed.
func (c *container) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.stopCh:
	case <-ctx.Done():
	}
	return false
}

type exitInfo struct {
	code int32
	at   time.Time
}

// run is the container's life: start, watch, restart per policy with back-off.
func (c *container) run(ctx context.Context) {
	defer close(c.done)
	backoff := backoffMin
	for !c.stopped() && ctx.Err() == nil {
		cmd, exited, err := c.start(ctx)
		if err != nil {
			reason := reasonStartError
			var ce *containerError
			if errors.As(err, &ce) {
				reason = ce.reason
			}
			c.w.a.log.Info("container start failed", "pod", c.w.key, "container", c.spec.Name, "reason", reason, "err", err)
			c.update(func(st *corev1.ContainerStatus) {
				st.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()}}
			})
			if !c.sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, backoffMax)
			continue
		}
		pid := cmd.Process.Pid
		started := time.Now()
		id := fmt.Sprintf("localcluster://%s/%s/%d", c.pod.UID, c.spec.Name, c.status().RestartCount)
		c.update(func(st *corev1.ContainerStatus) {
			st.ContainerID = id
			st.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(started)}}
			st.Started = ptr(c.spec.StartupProbe == nil)
			st.Ready = false
		})
		probeCtx, cancelProbes := context.WithCancel(ctx)
		kill := make(chan time.Duration, 1)
		if !c.isInit {
			go c.probe(probeCtx, kill)
		}
		var ex exitInfo
		stopping := false
		select {
		case ex = <-exited:
		case <-c.stopCh:
			stopping = true
			ex = terminate(pid, c.preStop(ctx, c.grace), exited)
		case <-ctx.Done():
			stopping = true
			ex = terminate(pid, min(specGrace(c.pod), MaxShutdownGrace), exited)
		case g := <-kill:
			ex = terminate(pid, g, exited)
		}
		cancelProbes()
		_ = os.Remove(c.pidFile())
		reason := "Completed"
		if ex.code != 0 {
			reason = "Error"
		}
		term := &corev1.ContainerStateTerminated{ExitCode: ex.code, Reason: reason, ContainerID: id,
			StartedAt: metav1.NewTime(started), FinishedAt: metav1.NewTime(ex.at)}
		c.update(func(st *corev1.ContainerStatus) {
			st.State = corev1.ContainerState{Terminated: term}
			st.Ready, st.Started = false, ptr(false)
		})
		if stopping || !c.restarts(ex.code) {
			return
		}
		if ex.at.Sub(started) >= backoffReset {
			backoff = backoffMin
		}
		c.update(func(st *corev1.ContainerStatus) {
			st.LastTerminationState = corev1.ContainerState{Terminated: term}
			st.RestartCount++
			st.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reasonCrashLoop,
				Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", backoff, c.spec.Name, c.pod.Name)}}
		})
		if !c.sleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, backoffMax)
	}
}

// restarts applies the pod's restartPolicy; init containers rerun until they succeed
// unless the policy is Never.
func (c *container) restarts(code int32) bool {
	switch c.pod.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	}
	return !c.isInit || code != 0
}

// preStop runs the container's preStop hook, as a kubelet does before SIGTERM,
// within the grace period, and returns what is left of it.
func (c *container) preStop(ctx context.Context, grace time.Duration) time.Duration {
	h := c.spec.Lifecycle
	if h == nil || h.PreStop == nil {
		return grace
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	var err error
	switch ps := h.PreStop; {
	case ps.Sleep != nil:
		sleepCtx(ctx, time.Duration(ps.Sleep.Seconds)*time.Second)
	case ps.HTTPGet != nil || ps.Exec != nil || ps.TCPSocket != nil:
		p := &corev1.Probe{TimeoutSeconds: int32(max(grace/time.Second, 1)), ProbeHandler: corev1.ProbeHandler{
			HTTPGet: ps.HTTPGet, Exec: ps.Exec, TCPSocket: ps.TCPSocket}}
		err = c.probeOnce(ctx, p)
	}
	if err != nil {
		c.w.a.log.Info("preStop hook failed", "pod", c.w.key, "container", c.spec.Name, "err", err)
	}
	return max(grace-time.Since(start), 0)
}

// terminate sends SIGTERM to the container's process group, SIGKILL after grace.
func terminate(pid int, grace time.Duration, exited <-chan exitInfo) exitInfo {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case ex := <-exited:
		_ = syscall.Kill(-pid, syscall.SIGKILL) // any child it left behind
		return ex
	case <-t.C:
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	return <-exited
}

func (c *container) pidFile() string {
	return filepath.Join(c.w.a.cfg.PodPIDDir(), fmt.Sprintf("%s_%s.pid", c.pod.UID, c.spec.Name))
}

// start launches the container: `localcluster init <spec>` in new mount and UTS
// namespaces, which sets up the filesystem and execs the binary. It returns once the
// exec happened (or failed), with a channel that gets the exit.
func (c *container) start(ctx context.Context) (*exec.Cmd, <-chan exitInfo, error) {
	w, a, spec := c.w, c.w.a, &c.spec
	if err := checkProbes(spec); err != nil {
		return nil, nil, err
	}
	bin, err := a.resolveImage(spec.Image)
	if err != nil {
		return nil, nil, err
	}
	ip := w.podIP()
	env, envMap, err := a.containerEnv(ctx, c.pod, spec, ip)
	if err != nil {
		return nil, nil, err
	}
	is := podinit.Spec{
		Root:       filepath.Join(w.dir, "rootfs"),
		Hostname:   podHostname(c.pod),
		Argv:       argv(bin, imageRepo(spec.Image), spec, envMap),
		Env:        env,
		WorkingDir: spec.WorkingDir,
	}
	// A private /tmp, emptied on every start like a container's writable layer, so
	// pods do not share the host's /tmp (or each other's files in it).
	tmp := filepath.Join(w.dir, "tmp", spec.Name)
	if err := os.RemoveAll(tmp); err != nil {
		return nil, nil, fmt.Errorf("clearing /tmp: %w", err)
	}
	if err := os.MkdirAll(tmp, 0o777); err != nil {
		return nil, nil, fmt.Errorf("creating /tmp: %w", err)
	}
	if err := os.Chmod(tmp, 0o1777); err != nil {
		return nil, nil, fmt.Errorf("creating /tmp: %w", err)
	}
	is.Mounts = append(is.Mounts, podinit.Mount{Source: tmp, Target: "/tmp"})
	for _, vm := range spec.VolumeMounts {
		src, ok := w.volumePath(vm.Name)
		if !ok {
			return nil, nil, configErr("volume mount %q: no volume of that name", vm.Name)
		}
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			sub = expand(vm.SubPathExpr, envMap)
		}
		if sub != "" {
			src = filepath.Join(src, filepath.Clean("/"+sub))
			if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(src, 0o777); err != nil {
					return nil, nil, configErr("subPath %q: %w", sub, err)
				}
			}
		}
		is.Mounts = append(is.Mounts, podinit.Mount{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly})
	}
	if err := os.MkdirAll(is.Root, 0o755); err != nil {
		return nil, nil, fmt.Errorf("creating root dir: %w", err)
	}
	specPath := filepath.Join(w.dir, "init-"+spec.Name+".json")
	if err := writeJSON(specPath, is); err != nil {
		return nil, nil, err
	}
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if !c.logged {
		// A new pod (new UID) starts a fresh log; restarts of its containers append.
		flags |= os.O_TRUNC
		c.logged = true
	}
	logPath := a.cfg.PodLogPath(c.pod.Namespace, c.pod.Name, spec.Name)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, nil, fmt.Errorf("creating log dir: %w", err)
	}
	logf, err := os.OpenFile(logPath, flags, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("opening log: %w", err)
	}
	defer logf.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("creating pipe: %w", err)
	}
	defer errR.Close()
	cmd := exec.Command(a.self, "init", specPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{errW} // fd 3 == podinit.ErrorFD
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS}
	err = cmd.Start()
	_ = errW.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("starting init: %w", err)
	}
	msg, _ := io.ReadAll(errR)
	if len(msg) > 0 {
		_ = cmd.Wait()
		return nil, nil, &containerError{reason: reasonStartError, err: errors.New(string(msg))}
	}
	c.mu.Lock()
	c.pid, c.env = cmd.Process.Pid, env
	c.mu.Unlock()
	if err := cluster.WritePIDFile(c.pidFile(), cmd.Process.Pid); err != nil {
		a.log.Error("recording pod process", "pod", w.key, "err", err)
	}
	exited := make(chan exitInfo, 1)
	go func() {
		_ = cmd.Wait()
		code := int32(cmd.ProcessState.ExitCode())
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int32(ws.Signal())
		}
		exited <- exitInfo{code: code, at: time.Now()}
	}()
	return cmd, exited, nil
}

// checkProbes refuses probe kinds the agent cannot run, so a pod fails visibly
// instead of never becoming ready. Exec probes need nsenter (util-linux) to run
// the command inside the container's namespaces and root.
func checkProbes(c *corev1.Container) error {
	for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		switch {
		case p == nil || p.HTTPGet != nil || p.TCPSocket != nil:
		case p.Exec != nil:
			if _, err := exec.LookPath("nsenter"); err != nil {
				return configErr("container %q: exec probes need nsenter (util-linux) on the host: %w", c.Name, err)
			}
		default:
			return configErr("container %q: only httpGet, tcpSocket and exec probes are supported by the local cluster", c.Name)
		}
	}
	return nil
}

// probe runs the startup probe until it passes, then readiness and liveness, as a
// kubelet does; a failing startup or liveness probe asks run to kill the process.
func (c *container) probe(ctx context.Context, kill chan<- time.Duration) {
	spec := &c.spec
	if p := spec.StartupProbe; p != nil {
		if !c.probeLoop(ctx, p, func(bool) bool { return true }) {
			if ctx.Err() == nil {
				c.w.a.log.Info("startup probe failed, restarting container", "pod", c.w.key, "container", spec.Name)
				kill <- c.probeGrace(p)
			}
			return
		}
		c.probeUpdate(ctx, func(st *corev1.ContainerStatus) bool { st.Started = ptr(true); return true })
	}
	if spec.ReadinessProbe == nil {
		c.probeUpdate(ctx, func(st *corev1.ContainerStatus) bool { st.Ready = true; return true })
	} else {
		go c.probeLoop(ctx, spec.ReadinessProbe, func(ok bool) bool {
			c.probeUpdate(ctx, func(st *corev1.ContainerStatus) bool {
				changed := st.Ready != ok
				st.Ready = ok
				return changed
			})
			return false
		})
	}
	if p := spec.LivenessProbe; p != nil {
		if !c.probeLoop(ctx, p, func(ok bool) bool { return !ok }) && ctx.Err() == nil {
			c.w.a.log.Info("liveness probe failed, restarting container", "pod", c.w.key, "container", spec.Name)
			kill <- c.probeGrace(p)
		}
	}
}

// probeLoop probes every period. Each time the success or failure threshold is
// reached it calls settled, and returns that result if settled says to stop. It
// returns false when ctx ends.
func (c *container) probeLoop(ctx context.Context, p *corev1.Probe, settled func(ok bool) (stop bool)) bool {
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	succ, fail := 0, 0
	if !sleepCtx(ctx, time.Duration(p.InitialDelaySeconds)*time.Second) {
		return false
	}
	for {
		err := c.probeOnce(ctx, p)
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			succ, fail = succ+1, 0
			if succ >= int(max(p.SuccessThreshold, 1)) && settled(true) {
				return true
			}
		} else {
			succ, fail = 0, fail+1
			if fail >= int(max(p.FailureThreshold, 1)) && settled(false) {
				return false
			}
		}
		if !sleepCtx(ctx, period) {
			return false
		}
	}
}

func (c *container) probeGrace(p *corev1.Probe) time.Duration {
	if p.TerminationGracePeriodSeconds != nil {
		return time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
	}
	return specGrace(c.pod)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

var probeTransport = &http.Transport{
	TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // kubelet probes skip verification too
	DisableKeepAlives: true,
}

// probeOnce runs one HTTP, TCP or exec probe (HTTP and TCP against the pod's IP
// unless the probe names a host; exec inside the container's namespaces).
func (c *container) probeOnce(ctx context.Context, p *corev1.Probe) error {
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		g := p.HTTPGet
		port, err := c.port(g.Port)
		if err != nil {
			return err
		}
		host := g.Host
		if host == "" {
			host = c.w.podIP()
		}
		scheme := "http"
		if g.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), g.Path), nil)
		if err != nil {
			return fmt.Errorf("building probe request: %w", err)
		}
		req.Header.Set("User-Agent", "kube-probe/localcluster")
		for _, h := range g.HTTPHeaders {
			req.Header.Set(h.Name, h.Value)
		}
		resp, err := (&http.Client{Transport: probeTransport}).Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("probe got %s", resp.Status)
		}
		return nil
	case p.Exec != nil:
		c.mu.Lock()
		pid, env := c.pid, c.env
		c.mu.Unlock()
		args := append([]string{"-t", strconv.Itoa(pid), "-m", "-u", "-r", "-w", "--"}, p.Exec.Command...)
		cmd := exec.CommandContext(ctx, "nsenter", args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("exec probe %q: %w: %s", p.Exec.Command, err, out)
		}
		return nil
	case p.TCPSocket != nil:
		port, err := c.port(p.TCPSocket.Port)
		if err != nil {
			return err
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = c.w.podIP()
		}
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	}
	return errors.New("unsupported probe")
}

func (c *container) port(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("container %q has no port named %q", c.spec.Name, p.StrVal)
}
