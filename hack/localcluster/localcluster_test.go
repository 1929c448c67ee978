package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestLocalCluster brings a throwaway cluster up in a temp state dir on its own
// ports, runs real pods of a small test program on it, and checks that `down`
// leaves no process behind. It needs the Kubernetes binaries (make k8s-bins) and
// root (mount namespaces); without them it skips and says why.
func TestLocalCluster(t *testing.T) {
	root := repoRoot()
	k8sBin := filepath.Join(root, "bin", "k8s", envOr("K8S_VERSION", "v1.36.3"))
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(k8sBin, b)); err != nil {
			t.Skipf("skipping: %s not found; run `make k8s-bins` (or `make test-localcluster`)", filepath.Join(k8sBin, b))
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: the node agent needs root for per-pod mount namespaces")
	}

	tmp := t.TempDir()
	lc := filepath.Join(tmp, "localcluster")
	server := filepath.Join(tmp, "testserver")
	goBuild(t, lc, ".", raceEnabled)
	goBuild(t, server, "./testdata/testserver", false)

	state := filepath.Join(tmp, "state")
	logDir = filepath.Join(state, "logs", "pods")
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 6))
	base := freePortBase(t, rng)
	podPort = freeWildcardPort(t, rng)
	cidr := fmt.Sprintf("127.0.%d.0/24", 200+rng.IntN(50))
	upArgs := []string{"up", "--state-dir", state, "--k8s-bin-dir", k8sBin,
		"--etcd-port", strconv.Itoa(base), "--apiserver-port", strconv.Itoa(base + 1),
		"--controller-manager-port", strconv.Itoa(base + 2), "--scheduler-port", strconv.Itoa(base + 3),
		"--pod-cidr", cidr, "--image", "testserver=" + server}

	start := time.Now()
	out := runLC(t, lc, upArgs...)
	t.Logf("cold up took %s:\n%s", time.Since(start).Round(time.Millisecond), out)
	downDone := false
	t.Cleanup(func() {
		if !downDone {
			_, _ = exec.Command(lc, "down", "--state-dir", state).CombinedOutput()
		}
	})
	if again := runLC(t, lc, upArgs...); !strings.Contains(again, "already up") {
		t.Errorf("second up: want a no-op saying 'already up', got %q", again)
	}

	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(state, "kubeconfig"))
	if err != nil {
		t.Fatalf("loading kubeconfig: %v", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatalf("creating client: %v", err)
	}
	// End before the test binary's own timeout, which would skip the cleanup that
	// takes the cluster down.
	deadline := time.Now().Add(3 * time.Minute)
	if d, ok := t.Deadline(); ok && d.Add(-30*time.Second).Before(deadline) {
		deadline = d.Add(-30 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	ns := "lc-test"
	mustCreate(t, func() error {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		return err
	})
	waitFor(ctx, t, "default ServiceAccount in "+ns, func() (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	mustCreate(t, func() error {
		_, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds"},
			StringData: map[string]string{"password": "hunter2"}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings"},
			Data: map[string]string{"greeting": "hello"}}, metav1.CreateOptions{})
		return err
	})

	t.Run("pod runs with env, volumes and identity", func(t *testing.T) {
		pod := serverPod("web", 10, 0)
		start := time.Now()
		mustCreate(t, func() error { _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); return err })
		p := waitReady(ctx, t, cs, ns, "web")
		t.Logf("time to first pod Ready: %s", time.Since(start).Round(time.Millisecond))

		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !netip.MustParsePrefix(cidr).Contains(ip) || !ip.IsLoopback() {
			t.Fatalf("podIP %q: want an address in %s (loopback)", p.Status.PodIP, cidr)
		}
		if p.Status.HostIP != "127.0.0.1" {
			t.Errorf("hostIP = %q, want 127.0.0.1", p.Status.HostIP)
		}
		for _, ct := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodReadyToStartContainers,
			corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
			if !hasCondition(p, ct) {
				t.Errorf("condition %s is not True: %+v", ct, p.Status.Conditions)
			}
		}
		if cs := p.Status.ContainerStatuses; len(cs) != 1 || !cs[0].Ready || cs[0].State.Running == nil {
			t.Errorf("container status: %+v", cs)
		}

		var env map[string]string
		if err := json.Unmarshal([]byte(httpGet(t, p.Status.PodIP, "/env")), &env); err != nil {
			t.Fatalf("decoding /env: %v", err)
		}
		for k, want := range map[string]string{
			"POD_NAME": "web", "POD_NAMESPACE": ns, "POD_IP": p.Status.PodIP, "NODE_NAME": "local",
			"PASSWORD": "hunter2", "GREETING": "hello", "cfg_greeting": "hello", "_hostname": "web",
			"_args": "serve --name=web", "KUBERNETES_SERVICE_HOST": "127.0.0.1",
			"KUBERNETES_SERVICE_PORT": strconv.Itoa(base + 1),
		} {
			if env[k] != want {
				t.Errorf("env %s = %q, want %q", k, env[k], want)
			}
		}
		files := []struct{ path, want string }{
			{"/etc/creds/password", "hunter2"},
			{"/var/run/secrets/kubernetes.io/serviceaccount/namespace", ns},
			{"/data/scratch/init", "written by init"},
		}
		for _, f := range files {
			if got := httpGet(t, p.Status.PodIP, "/file?path="+f.path); got != f.want {
				t.Errorf("file %s = %q, want %q", f.path, got, f.want)
			}
		}
		if got := httpGet(t, p.Status.PodIP, "/write?path=/data/scratch/x&data=1"); got != "ok\n" {
			t.Errorf("writing to emptyDir: %q", got)
		}
		if got := httpGet(t, p.Status.PodIP, "/whoami"); got != "system:serviceaccount:"+ns+":default" {
			t.Errorf("identity from the mounted token = %q", got)
		}
		for _, hostPath := range []string{"/etc/creds", "/data", "/var/run/secrets/kubernetes.io"} {
			if _, err := os.Stat(hostPath); err == nil {
				t.Errorf("%s exists on the host: pod mounts leaked out of the mount namespace", hostPath)
			}
		}
		if logs := runLC(t, lc, "logs", "web", "-c", "main", "-n", ns, "--state-dir", state); !strings.Contains(logs, "listening on "+p.Status.PodIP) {
			t.Errorf("localcluster logs: %q", logs)
		}
		out, err := exec.Command(lc, "logs", "web", "-n", ns, "--state-dir", state).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "init, main") {
			t.Errorf("logs of a two-container pod without -c: want an error naming both, got %v: %s", err, out)
		}
	})

	t.Run("graceful deletion", func(t *testing.T) {
		cases := []struct {
			name         string
			grace        int64
			termDelayMs  int
			wantExitLine bool
			minDur       time.Duration
		}{
			{"exits within grace", 10, 1500, true, 1500 * time.Millisecond},
			{"killed after grace", 1, 30000, false, time.Second},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				name := fmt.Sprintf("term-%d", tc.grace)
				pod := serverPod(name, tc.grace, tc.termDelayMs)
				pod.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/log?msg=preStop", Port: intstr.FromString("http")}}}
				mustCreate(t, func() error { _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); return err })
				p := waitReady(ctx, t, cs, ns, name)
				start := time.Now()
				if err := cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
					t.Fatalf("deleting: %v", err)
				}
				waitGone(ctx, t, cs, ns, name, p.UID)
				took := time.Since(start)
				if took < tc.minDur || took > time.Duration(tc.grace)*time.Second+5*time.Second {
					t.Errorf("deletion took %s, want between %s and grace+5s", took, tc.minDur)
				}
				logs := readFile(t, filepath.Join(state, "logs", "pods", ns+"_"+name+"_main.log"))
				pre, term := strings.Index(logs, "preStop"), strings.Index(logs, "got SIGTERM")
				if pre < 0 || term < pre || strings.Contains(logs, "exiting") != tc.wantExitLine {
					t.Errorf("log after deletion (want preStop, then SIGTERM, exit line %v):\n%s", tc.wantExitLine, logs)
				}
				if _, err := os.Stat(filepath.Join(state, "pods", string(p.UID))); err == nil {
					t.Errorf("pod dir of deleted pod still exists")
				}
			})
		}
	})

	t.Run("probes drive conditions and restarts", func(t *testing.T) {
		p := waitReady(ctx, t, cs, ns, "web")
		podStatus := func(what string, cond func(*corev1.Pod) bool) {
			t.Helper()
			waitFor(ctx, t, what, func() (bool, error) {
				cur, err := cs.CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{})
				return err == nil && cond(cur), err
			})
		}
		if got := httpGet(t, p.Status.PodIP, "/write?path=/tmp/unready&data=1"); got != "ok\n" {
			t.Fatalf("writing /tmp/unready: %q", got)
		}
		if _, err := os.Stat("/tmp/unready"); err == nil {
			t.Errorf("the pod's /tmp is the host's")
		}
		podStatus("readiness failure to clear Ready", func(p *corev1.Pod) bool {
			return !hasCondition(p, corev1.PodReady) && !hasCondition(p, corev1.ContainersReady) && p.Status.Phase == corev1.PodRunning
		})
		if got := httpGet(t, p.Status.PodIP, "/remove?path=/tmp/unready"); got != "ok\n" {
			t.Fatalf("removing /tmp/unready: %q", got)
		}
		podStatus("Ready again", func(p *corev1.Pod) bool { return hasCondition(p, corev1.PodReady) })
		cur, err := cs.CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("getting pod: %v", err)
		}
		// Relative: on a loaded machine a probe may already have timed out twice.
		restarts := cur.Status.ContainerStatuses[0].RestartCount
		if got := httpGet(t, p.Status.PodIP, "/write?path=/tmp/dead&data=1"); got != "ok\n" {
			t.Fatalf("writing /tmp/dead: %q", got)
		}
		// The restarted container gets a fresh /tmp, so it comes back healthy.
		podStatus("liveness failure to restart the container", func(p *corev1.Pod) bool {
			s := p.Status.ContainerStatuses
			return len(s) == 1 && s[0].RestartCount > restarts && s[0].Ready && hasCondition(p, corev1.PodReady)
		})
	})

	t.Run("restart policy and unknown images", func(t *testing.T) {
		crash := serverPod("crash", 1, 0)
		crash.Spec.Containers[0].Command = nil
		crash.Spec.Containers[0].Args = []string{"fail"}
		crash.Spec.Containers[0].ReadinessProbe = nil
		bad := serverPod("bad-image", 1, 0)
		bad.Spec.Containers[0].Image = "docker.io/library/nginx:1.25"
		cases := []struct {
			pod  *corev1.Pod
			want func(corev1.ContainerStatus) bool
		}{
			{crash, func(s corev1.ContainerStatus) bool {
				return s.RestartCount >= 2 && s.LastTerminationState.Terminated != nil && s.LastTerminationState.Terminated.ExitCode == 3
			}},
			{bad, func(s corev1.ContainerStatus) bool {
				return s.State.Waiting != nil && s.State.Waiting.Reason == "ErrImagePull" && strings.Contains(s.State.Waiting.Message, `"nginx"`)
			}},
		}
		for _, tc := range cases {
			t.Run(tc.pod.Name, func(t *testing.T) {
				mustCreate(t, func() error { _, err := cs.CoreV1().Pods(ns).Create(ctx, tc.pod, metav1.CreateOptions{}); return err })
				var last []corev1.ContainerStatus
				// Deferred: waitFor fails with t.Fatalf, which ends this function.
				defer func() {
					if t.Failed() {
						t.Logf("last container status: %+v", last)
					}
				}()
				waitFor(ctx, t, "status of "+tc.pod.Name, func() (bool, error) {
					p, err := cs.CoreV1().Pods(ns).Get(ctx, tc.pod.Name, metav1.GetOptions{})
					if err != nil {
						return false, err
					}
					last = p.Status.ContainerStatuses
					return len(last) == 1 && tc.want(last[0]), nil
				})
			})
		}
	})

	t.Run("PVC survives pod deletion and StatefulSet recreation", func(t *testing.T) {
		sts := serverStatefulSet("db")
		mustCreate(t, func() error {
			_, err := cs.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{})
			return err
		})
		p := waitReady(ctx, t, cs, ns, "db-0")
		if got := httpGet(t, p.Status.PodIP, "/write?path=/var/lib/db/value&data=kept"); got != "ok\n" {
			t.Fatalf("writing to the claim: %q", got)
		}
		pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-db-0", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("getting claim: %v", err)
		}
		if want := "pvc-" + string(pvc.UID); pvc.Spec.VolumeName != want || pvc.Status.Phase != corev1.ClaimBound {
			t.Fatalf("claim bound to %q (%s), want %q Bound", pvc.Spec.VolumeName, pvc.Status.Phase, want)
		}
		if got := readFile(t, filepath.Join(state, "pv", pvc.Spec.VolumeName, "value")); got != "kept" {
			t.Errorf("data on the host = %q", got)
		}

		steps := []struct {
			name   string
			remove func() error
		}{
			{"pod deleted", func() error { return cs.CoreV1().Pods(ns).Delete(ctx, "db-0", metav1.DeleteOptions{}) }},
			{"statefulset recreated", func() error {
				if err := cs.AppsV1().StatefulSets(ns).Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
					return err
				}
				waitGone(ctx, t, cs, ns, "db-0", "")
				_, err := cs.AppsV1().StatefulSets(ns).Create(ctx, serverStatefulSet("db"), metav1.CreateOptions{})
				return err
			}},
		}
		for _, s := range steps {
			old := waitReady(ctx, t, cs, ns, "db-0")
			if err := s.remove(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			var p *corev1.Pod
			waitFor(ctx, t, "a new db-0 Ready", func() (bool, error) {
				cur, err := cs.CoreV1().Pods(ns).Get(ctx, "db-0", metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return false, nil
				}
				if err != nil {
					return false, err
				}
				p = cur
				return cur.UID != old.UID && hasCondition(cur, corev1.PodReady), nil
			})
			if got := httpGet(t, p.Status.PodIP, "/file?path=/var/lib/db/value"); got != "kept" {
				t.Errorf("after %s: data = %q, want %q", s.name, got, "kept")
			}
		}
	})

	t.Run("down leaves nothing running", func(t *testing.T) {
		start := time.Now()
		out := runLC(t, lc, "down", "--state-dir", state)
		downDone = true
		t.Logf("down took %s:\n%s", time.Since(start).Round(time.Millisecond), out)
		if left := processesMentioning(t, state, server); len(left) > 0 {
			t.Errorf("processes still running after down:\n%s", strings.Join(left, "\n"))
		}
		pids, _ := filepath.Glob(filepath.Join(state, "pids", "*.pid"))
		podPIDs, _ := filepath.Glob(filepath.Join(state, "pids", "pods", "*.pid"))
		if left := append(pids, podPIDs...); len(left) > 0 {
			t.Errorf("pid files left: %v", left)
		}
		if out := runLC(t, lc, "status", "--state-dir", state); strings.Contains(out, "running") {
			t.Errorf("status after down:\n%s", out)
		}
		if log := readFile(t, filepath.Join(state, "logs", "agent.log")); strings.Contains(log, "DATA RACE") {
			t.Errorf("the agent hit a data race:\n%s", log)
		}
	})
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func goBuild(t *testing.T, out, pkg string, race bool) {
	t.Helper()
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	if !race {
		cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

func runLC(t *testing.T, lc string, args ...string) string {
	t.Helper()
	b, err := exec.Command(lc, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("localcluster %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return string(b)
}

// freePortBase finds P such that P, P+1, P+2, P+3 (apiserver, controller manager,
// scheduler) and P+10, P+20 (etcd peer, metrics) are all free on 127.0.0.1. P is below
// Linux's ephemeral range (32768-60999), where an outgoing connection could take one of
// them between this check and the cluster's bind, and above the fixed ports of `make
// run` and of the e2e slots (hack/e2e-local.sh).
func freePortBase(t *testing.T, rng *rand.Rand) int {
	t.Helper()
	for range 50 {
		base := 28000 + rng.IntN(4700)
		ok := true
		for _, p := range []int{base, base + 1, base + 2, base + 3, base + 10, base + 20} {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				ok = false
				break
			}
			_ = l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range found")
	return 0
}

// podPort is the test pods' port. Pods listen on their own IP, but any process on
// the machine listening on the wildcard address with the same port would take it
// from them, so it is picked free rather than fixed.
var podPort int

// logDir holds the pods' logs, dumped when a pod fails to become ready.
var logDir string

func freeWildcardPort(t *testing.T, rng *rand.Rand) int {
	t.Helper()
	for range 50 {
		p := 20000 + rng.IntN(10000)
		if l, err := net.Listen("tcp", ":"+strconv.Itoa(p)); err == nil {
			_ = l.Close()
			return p
		}
	}
	t.Fatal("no free port found")
	return 0
}

func mustCreate(t *testing.T, create func() error) {
	t.Helper()
	if err := create(); err != nil {
		t.Fatalf("creating: %v", err)
	}
}

// waitFor polls cond every 100 ms until it holds; it fails the test at the context's
// deadline or on an error.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func hasCondition(p *corev1.Pod, ct corev1.PodConditionType) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == ct {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func waitReady(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	// Bounded well inside the test's deadline so a stuck pod is reported with its
	// status instead of starving the steps after it.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	defer func() {
		if t.Failed() && p != nil {
			st, _ := json.MarshalIndent(p.Status, "", "  ")
			t.Logf("last status of %s:\n%s", name, st)
			if logDir != "" {
				logs, _ := filepath.Glob(filepath.Join(logDir, ns+"_"+name+"_*.log"))
				for _, l := range logs {
					b, _ := os.ReadFile(l)
					t.Logf("%s:\n%s", filepath.Base(l), b)
				}
			}
		}
	}()
	waitFor(wctx, t, "pod "+name+" Ready", func() (bool, error) {
		cur, err := cs.CoreV1().Pods(ns).Get(wctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		p = cur
		return hasCondition(cur, corev1.PodReady) && cur.DeletionTimestamp == nil, nil
	})
	return p
}

// waitGone waits until the pod is gone (or, with uid set, replaced by another).
func waitGone(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string, uid types.UID) {
	t.Helper()
	waitFor(ctx, t, "pod "+name+" gone", func() (bool, error) {
		cur, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		return uid != "" && cur.UID != uid, nil
	})
}

func httpGet(t *testing.T, ip, path string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + net.JoinHostPort(ip, strconv.Itoa(podPort)) + path)
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("reading %s: %v", path, err)
	}
	return string(b)
}

// processesMentioning lists live processes whose command line names any of needles.
func processesMentioning(t *testing.T, needles ...string) []string {
	t.Helper()
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		for _, n := range needles {
			if strings.Contains(cmd, n) {
				found = append(found, filepath.Base(filepath.Dir(p))+": "+cmd)
				break
			}
		}
	}
	return found
}

// serverPod is a pod of the test server with the env, volumes and probe the test
// checks; termDelayMs makes it linger after SIGTERM.
func serverPod(name string, grace int64, termDelayMs int) *corev1.Pod {
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "testserver"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			InitContainers: []corev1.Container{{
				Name:         "init",
				Image:        "testserver",
				Args:         []string{"write", "/data/scratch/init", "written by init"},
				VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: "/data/scratch"}},
			}},
			Containers: []corev1.Container{{
				Name:    "main",
				Image:   "registry.example/annshard/testserver:dev",
				Command: []string{"testserver", "serve"},
				Args:    []string{"--name=$(POD_NAME)"},
				Env: []corev1.EnvVar{
					{Name: "PORT", Value: strconv.Itoa(podPort)},
					{Name: "TERM_DELAY_MS", Value: strconv.Itoa(termDelayMs)},
					{Name: "POD_NAME", ValueFrom: field("metadata.name")},
					{Name: "POD_NAMESPACE", ValueFrom: field("metadata.namespace")},
					{Name: "POD_IP", ValueFrom: field("status.podIP")},
					{Name: "NODE_NAME", ValueFrom: field("spec.nodeName")},
					{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "password"}}},
					{Name: "GREETING", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "greeting"}}},
				},
				EnvFrom: []corev1.EnvFromSource{{Prefix: "cfg_", ConfigMapRef: &corev1.ConfigMapEnvSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}}},
				LivenessProbe: &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 2, TimeoutSeconds: 5, ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/livez", Port: intstr.FromInt32(int32(podPort))}}},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(podPort)}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "creds", MountPath: "/etc/creds", ReadOnly: true},
					{Name: "scratch", MountPath: "/data/scratch"},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds"}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		},
	}
}

func serverStatefulSet(name string) *appsv1.StatefulSet {
	pod := serverPod(name, 5, 0)
	pod.Labels = map[string]string{"app": name}
	pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts,
		corev1.VolumeMount{Name: "data", MountPath: "/var/lib/db"})
	// An exec probe: the path exists only in the container's mount namespace.
	pod.Spec.Containers[0].StartupProbe = &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 30,
		ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/etc/creds/password"}}}}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptrTo(int32(1)),
			ServiceName: name,
			Selector:    &metav1.LabelSelector{MatchLabels: pod.Labels},
			Template:    corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta, Spec: pod.Spec},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
}

func ptrTo[T any](v T) *T { return &v }
