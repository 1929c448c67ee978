package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// StorageClassName is the default StorageClass `up` creates; the agent's provisioner
// binds claims of this class. Provisioner is its provisioner name.
const (
	StorageClassName = "local"
	Provisioner      = "annshard.io/localcluster"
)

// component is one detached process `up` starts; down stops them in reverse order.
type component struct {
	name  string
	argv  []string
	grace time.Duration
}

// components lists the processes in start order. Stopping runs the list backwards:
// agent, scheduler, controller manager, apiserver, etcd — the apiserver hangs for a
// minute in shutdown when etcd is gone first.
func (c Config) components(self string) []component {
	d, pki, bin := c.StateDir, c.PKIDir(), c.K8sBinDir
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", c.etcdPeerPort())
	return []component{
		{name: "etcd", grace: 10 * time.Second, argv: []string{filepath.Join(bin, "etcd"),
			"--name", "lcp", "--data-dir", filepath.Join(d, "etcd"),
			"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "lcp=" + peerURL,
			"--listen-metrics-urls", fmt.Sprintf("http://127.0.0.1:%d", c.etcdMetricsPort()),
			"--unsafe-no-fsync", "--log-level", "warn"}},
		{name: "kube-apiserver", grace: 20 * time.Second, argv: []string{filepath.Join(bin, "kube-apiserver"),
			"--etcd-servers=" + etcdURL, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(c.APIServerPort), "--endpoint-reconciler-type=none",
			"--tls-cert-file=" + filepath.Join(pki, apiserverCert),
			"--tls-private-key-file=" + filepath.Join(pki, apiserverKey),
			"--client-ca-file=" + filepath.Join(pki, caCert),
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + filepath.Join(pki, saPublicKey),
			"--service-account-signing-key-file=" + filepath.Join(pki, saPrivateKey),
			"--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=Node,RBAC",
			"--kubelet-preferred-address-types=InternalIP"}},
		{name: "kube-controller-manager", grace: 10 * time.Second, argv: []string{filepath.Join(bin, "kube-controller-manager"),
			"--kubeconfig=" + c.Kubeconfig(), "--leader-elect=false", "--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(c.ControllerManagerPort), "--controllers=*",
			"--root-ca-file=" + filepath.Join(pki, caCert),
			"--service-account-private-key-file=" + filepath.Join(pki, saPrivateKey),
			"--use-service-account-credentials=false", "--flex-volume-plugin-dir=" + filepath.Join(d, "flex")}},
		{name: "kube-scheduler", grace: 10 * time.Second, argv: []string{filepath.Join(bin, "kube-scheduler"),
			"--kubeconfig=" + c.Kubeconfig(), "--leader-elect=false", "--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(c.SchedulerPort)}},
		// The agent stops its pods before it exits, each within its grace period capped
		// at agent.MaxShutdownGrace, hence the longer wait here.
		{name: "agent", grace: 25 * time.Second, argv: []string{self, "agent", "--state-dir", d}},
	}
}

func (c Config) pidFile(name string) string { return filepath.Join(c.PIDDir(), name+".pid") }
func (c Config) logFile(name string) string { return filepath.Join(c.LogDir(), name+".log") }

// Up starts the cluster described by c and waits until it can run pods. It is a
// no-op when the cluster is already running; a partly running cluster (one process
// died) is stopped and started again. On failure it stops what it started.
func Up(ctx context.Context, c Config, out io.Writer) error {
	start := time.Now()
	if old, err := Load(c.StateDir); err == nil {
		alive := 0
		for _, comp := range old.components("") {
			if _, ok := ReadPIDFile(old.pidFile(comp.name)); ok {
				alive++
			}
		}
		switch {
		case alive == len(old.components("")):
			fmt.Fprintf(out, "local cluster already up (state %s); KUBECONFIG=%s\n", old.StateDir, old.Kubeconfig())
			return nil
		case alive > 0:
			fmt.Fprintf(out, "local cluster partly running (%d processes): restarting it\n", alive)
			if err := Down(old, out); err != nil {
				return fmt.Errorf("stopping partly running cluster: %w", err)
			}
		}
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(c.K8sBinDir, b)); err != nil {
			return fmt.Errorf("missing %s in %s (run `make k8s-bins`): %w", b, c.K8sBinDir, err)
		}
	}
	for _, p := range []int{c.EtcdPort, c.etcdPeerPort(), c.etcdMetricsPort(), c.APIServerPort, c.ControllerManagerPort, c.SchedulerPort} {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return fmt.Errorf("port %d is taken (another cluster? pick other ports): %w", p, err)
		}
		_ = l.Close()
	}
	for _, dir := range []string{c.StateDir, c.LogDir(), c.PIDDir(), c.PodsDir(), c.PVDir(), filepath.Join(c.StateDir, "bin")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	if err := ensurePKI(c.PKIDir(), c.NodeName); err != nil {
		return err
	}
	if err := c.writeKubeconfigs(); err != nil {
		return err
	}
	if err := c.save(); err != nil {
		return err
	}
	self, err := c.installSelf()
	if err != nil {
		return err
	}
	env := append(os.Environ(), "KUBECONFIG="+c.Kubeconfig())
	ctx, cancel := context.WithTimeout(ctx, upTimeout)
	defer cancel()
	stages, err := c.readyStages(start)
	if err != nil {
		return errors.Join(err, Down(c, io.Discard))
	}
	// etcd and the API server start first; their clients (controller manager, scheduler,
	// agent) once the API server is ready. Started together, a controller manager on a
	// loaded machine gives up waiting for the API server's RBAC bootstrap and exits.
	comps := c.components(self)
	var started []string
	for _, step := range []struct {
		comps  []component
		stages []readyStage
	}{{comps[:controlPlaneCore], stages[:controlPlaneCore]}, {comps[controlPlaneCore:], stages[controlPlaneCore:]}} {
		for _, comp := range step.comps {
			if _, err := startDetached(c.pidFile(comp.name), c.logFile(comp.name), comp.argv, env); err != nil {
				return errors.Join(err, Down(c, io.Discard))
			}
			started = append(started, comp.name)
		}
		if err := c.waitStages(ctx, out, start, step.stages, started); err != nil {
			return errors.Join(err, Down(c, io.Discard))
		}
	}
	fmt.Fprintf(out, "local cluster up in %s; export KUBECONFIG=%s\n", time.Since(start).Round(10*time.Millisecond), c.Kubeconfig())
	return nil
}

// installSelf copies the running executable into the state directory: `go run`
// deletes its binary when it returns, and the agent must re-exec itself as every
// pod's init for as long as the cluster runs.
func (c Config) installSelf() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding own executable: %w", err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		return "", fmt.Errorf("reading own executable: %w", err)
	}
	dst := filepath.Join(c.StateDir, "bin", "localcluster")
	if err := writeFileAtomic(dst, data, 0o755); err != nil {
		return "", err
	}
	return dst, nil
}

func (c Config) writeKubeconfigs() error {
	ca, err := os.ReadFile(c.CACert())
	if err != nil {
		return fmt.Errorf("reading CA: %w", err)
	}
	for _, k := range []struct{ path, user, cert, key string }{
		{c.Kubeconfig(), "admin", adminCert, adminKey},
		{c.NodeKubeconfig(), "system:node:" + c.NodeName, nodeCert, nodeKey},
	} {
		crt, err := os.ReadFile(filepath.Join(c.PKIDir(), k.cert))
		if err != nil {
			return fmt.Errorf("reading %s: %w", k.cert, err)
		}
		key, err := os.ReadFile(filepath.Join(c.PKIDir(), k.key))
		if err != nil {
			return fmt.Errorf("reading %s: %w", k.key, err)
		}
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: c.APIServerURL(), CertificateAuthorityData: ca}
		cfg.AuthInfos[k.user] = &clientcmdapi.AuthInfo{ClientCertificateData: crt, ClientKeyData: key}
		cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: k.user, Namespace: "default"}
		cfg.CurrentContext = "local"
		if err := clientcmd.WriteToFile(*cfg, k.path); err != nil {
			return fmt.Errorf("writing kubeconfig %s: %w", k.path, err)
		}
	}
	return nil
}

// RESTConfig is the admin client configuration of the cluster.
func (c Config) RESTConfig() (*rest.Config, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = 100, 200
	return rc, nil
}

// upTimeout bounds how long `up` waits for the whole cluster; generous, because a
// loaded 2-core machine starts the control plane several times slower than an idle one.
const upTimeout = 4 * time.Minute

// controlPlaneCore is how many of components() (etcd, kube-apiserver) start before the
// rest, and how many of readyStages() they must pass first.
const controlPlaneCore = 2

// readyStage is one thing `up` waits for, in order.
type readyStage struct {
	what  string
	check func(context.Context) error
}

// readyStages are the checks of a started cluster, in order: the first controlPlaneCore
// need only etcd and the API server.
func (c Config) readyStages(start time.Time) ([]readyStage, error) {
	rc, err := c.RESTConfig()
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	tlsClient, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("creating HTTP client: %w", err)
	}
	return []readyStage{
		{"etcd healthy", func(ctx context.Context) error {
			return httpOK(ctx, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/health", c.EtcdPort))
		}},
		{"apiserver ready", func(ctx context.Context) error {
			return httpOK(ctx, tlsClient, c.APIServerURL()+"/readyz")
		}},
		{"default ServiceAccount", func(ctx context.Context) error {
			_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
			return err
		}},
		{"StorageClass " + StorageClassName, func(ctx context.Context) error { return ensureStorageClass(ctx, cs) }},
		{"node " + c.NodeName + " Ready", func(ctx context.Context) error {
			n, err := cs.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, cond := range n.Status.Conditions {
				// A heartbeat from before this start is a previous agent's.
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue &&
					!cond.LastHeartbeatTime.Time.Before(start.Truncate(time.Second)) {
					for _, t := range n.Spec.Taints {
						if t.Key == corev1.TaintNodeNotReady {
							return errors.New("not-ready taint still set")
						}
					}
					return nil
				}
			}
			return errors.New("not Ready")
		}},
	}, nil
}

// waitStages waits for each stage in turn and reports how long it took since start, so
// a slow start shows where the time went. A started component that exits while we wait
// fails the wait at once, with the tail of its log.
func (c Config) waitStages(ctx context.Context, out io.Writer, start time.Time, stages []readyStage, started []string) error {
	for _, s := range stages {
		var last error
		for {
			if last = s.check(ctx); last == nil {
				break
			}
			if dead := c.deadComponent(started); dead != "" {
				return fmt.Errorf("%s exited while waiting for %s; last lines of %s:\n%s",
					dead, s.what, c.logFile(dead), tail(c.logFile(dead), 20))
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for %s: %w (last error: %v)", s.what, ctx.Err(), last)
			case <-time.After(100 * time.Millisecond):
			}
		}
		fmt.Fprintf(out, "  %-28s %6.2fs\n", s.what, time.Since(start).Seconds())
	}
	return nil
}

// deadComponent names the first of the started components whose process is gone.
func (c Config) deadComponent(started []string) string {
	for _, name := range started {
		if _, ok := ReadPIDFile(c.pidFile(name)); !ok {
			return name
		}
	}
	return ""
}

func httpOK(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// ensureStorageClass creates the default StorageClass, binding on the first consumer:
// the scheduler picks a new pod's node first and the agent of that node then provisions
// its claim (see the agent's provisioner), so a StatefulSet's new pod schedules at once
// instead of waiting out the scheduler's back-off on an unbound claim. A class left by
// an older cluster with another binding mode is replaced (the field is immutable);
// bound volumes do not depend on it.
func ensureStorageClass(ctx context.Context, cs kubernetes.Interface) error {
	mode := storagev1.VolumeBindingWaitForFirstConsumer
	reclaim := corev1.PersistentVolumeReclaimDelete
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: StorageClassName, Annotations: map[string]string{
			"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner:       Provisioner,
		VolumeBindingMode: &mode,
		ReclaimPolicy:     &reclaim,
	}
	old, err := cs.StorageV1().StorageClasses().Get(ctx, StorageClassName, metav1.GetOptions{})
	switch {
	case err == nil && old.VolumeBindingMode != nil && *old.VolumeBindingMode == mode:
		return nil
	case err == nil:
		if err := cs.StorageV1().StorageClasses().Delete(ctx, StorageClassName, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &old.UID}}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("replacing StorageClass %s: %w", StorageClassName, err)
		}
	case !apierrors.IsNotFound(err):
		return err
	}
	_, err = cs.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// Down stops every process of the cluster by PID, in the order the components need,
// then any pod process the agent left behind. It keeps the state directory, so the
// next Up resumes the same cluster. Stale PID files are removed.
func Down(c Config, out io.Writer) error {
	var errs []error
	comps := c.components("")
	for i := len(comps) - 1; i >= 0; i-- {
		comp := comps[i]
		path := c.pidFile(comp.name)
		if pid, ok := ReadPIDFile(path); ok {
			killed, err := StopPID(pid, comp.grace)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("stopping %s: %w", comp.name, err))
			case killed:
				fmt.Fprintf(out, "stopped %s (pid %d, killed after %s)\n", comp.name, pid, comp.grace)
			default:
				fmt.Fprintf(out, "stopped %s (pid %d)\n", comp.name, pid)
			}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing pid file: %w", err))
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(c.PodPIDDir(), "*.pid"))
	for _, path := range leftovers {
		if pid, ok := ReadPIDFile(path); ok {
			if _, err := StopPID(pid, 5*time.Second); err != nil {
				errs = append(errs, fmt.Errorf("stopping pod process %s: %w", filepath.Base(path), err))
			} else {
				fmt.Fprintf(out, "stopped leftover pod process %s (pid %d)\n", strings.TrimSuffix(filepath.Base(path), ".pid"), pid)
			}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing pid file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Status describes each component and, when any is running, lists the pods.
func Status(ctx context.Context, c Config, out io.Writer) error {
	up := 0
	for _, comp := range c.components("") {
		if pid, ok := ReadPIDFile(c.pidFile(comp.name)); ok {
			up++
			fmt.Fprintf(out, "%-24s running (pid %d)\n", comp.name, pid)
		} else {
			fmt.Fprintf(out, "%-24s stopped\n", comp.name)
		}
	}
	if up == 0 {
		return nil
	}
	fmt.Fprintf(out, "apiserver %s, kubeconfig %s\n", c.APIServerURL(), c.Kubeconfig())
	rc, err := c.RESTConfig()
	if err != nil {
		return err
	}
	rc.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing pods: %w", err)
	}
	fmt.Fprintf(out, "%d pods\n", len(pods.Items))
	for _, p := range pods.Items {
		ready := "NotReady"
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				ready = "Ready"
			}
		}
		fmt.Fprintf(out, "  %-40s %-10s %-9s %s\n", p.Namespace+"/"+p.Name, p.Status.Phase, ready, p.Status.PodIP)
	}
	return nil
}
