package framework

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/client"
)

// Port is where both shardserver roles listen inside their pods.
const Port = 8080

// Cluster holds the clients of one cluster.
type Cluster struct {
	Config *rest.Config
	Client ctrlclient.Client
	Kube   kubernetes.Interface
	// LogDir, when set, is where the local cluster keeps container logs
	// (<ns>_<pod>_<container>.log); used when the apiserver cannot serve logs.
	LogDir string
}

// Scheme knows the core types and AnnIndex.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = annv1alpha1.AddToScheme(s)
	return s
}

// Connect builds a Cluster from a kubeconfig path (empty: $KUBECONFIG, then in-cluster).
func Connect(kubeconfig string) (*Cluster, error) {
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %q: %w", kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	c, err := ctrlclient.New(cfg, ctrlclient.Options{Scheme: Scheme()})
	if err != nil {
		return nil, fmt.Errorf("building client: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building clientset: %w", err)
	}
	return &Cluster{Config: cfg, Client: c, Kube: kube}, nil
}

// Condition returns the index's condition of type t, or nil.
func Condition(idx *annv1alpha1.AnnIndex, t string) *metav1.Condition {
	return meta.FindStatusCondition(idx.Status.Conditions, t)
}

// Describe is a one-line summary of an index's status, for progress output.
func Describe(idx *annv1alpha1.AnnIndex) string {
	var parts []string
	for _, t := range []string{annv1alpha1.ConditionAvailable, annv1alpha1.ConditionProgressing, annv1alpha1.ConditionDegraded} {
		if cond := Condition(idx, t); cond != nil {
			parts = append(parts, fmt.Sprintf("%s=%s (%s)", t, cond.Status, cond.Message))
		}
	}
	if len(parts) == 0 {
		return "no conditions yet"
	}
	return strings.Join(parts, "; ")
}

// WaitAvailable polls until the index is Available and observed at its generation, calling
// progress (if not nil) whenever the summary changes.
func (c *Cluster) WaitAvailable(ctx context.Context, key types.NamespacedName, timeout time.Duration, progress func(string)) (*annv1alpha1.AnnIndex, error) {
	return c.waitFor(ctx, key, timeout, progress, false)
}

// WaitHealthy is WaitAvailable plus Degraded=False: every replica of every shard ready.
func (c *Cluster) WaitHealthy(ctx context.Context, key types.NamespacedName, timeout time.Duration, progress func(string)) (*annv1alpha1.AnnIndex, error) {
	return c.waitFor(ctx, key, timeout, progress, true)
}

func (c *Cluster) waitFor(ctx context.Context, key types.NamespacedName, timeout time.Duration, progress func(string), healthy bool) (*annv1alpha1.AnnIndex, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		idx := &annv1alpha1.AnnIndex{}
		err := c.Client.Get(ctx, key, idx)
		if err == nil {
			if s := Describe(idx); s != last && progress != nil {
				progress(s)
				last = s
			}
			if isTrue(idx, annv1alpha1.ConditionAvailable) && idx.Status.ObservedGeneration == idx.Generation &&
				(!healthy || isFalse(idx, annv1alpha1.ConditionDegraded)) {
				return idx, nil
			}
		} else if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			last = "error: " + err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %s: %w (last: %s)", key, ctx.Err(), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func isTrue(idx *annv1alpha1.AnnIndex, t string) bool {
	cond := Condition(idx, t)
	return cond != nil && cond.Status == metav1.ConditionTrue
}

func isFalse(idx *annv1alpha1.AnnIndex, t string) bool {
	cond := Condition(idx, t)
	return cond != nil && cond.Status == metav1.ConditionFalse
}

// Pods lists the pods of one component ("shard" or "router") of an index, only the ready
// ones with readyOnly; for shards, shard >= 0 narrows to one shard. Sorted by name.
func (c *Cluster) Pods(ctx context.Context, ns, index, component string, shard int, readyOnly bool) ([]corev1.Pod, error) {
	labels := ctrlclient.MatchingLabels{
		"app.kubernetes.io/instance":  index,
		"app.kubernetes.io/component": component,
	}
	if shard >= 0 {
		labels["annshard.io/shard"] = strconv.Itoa(shard)
	}
	var list corev1.PodList
	if err := c.Client.List(ctx, &list, ctrlclient.InNamespace(ns), labels); err != nil {
		return nil, fmt.Errorf("listing %s pods of %s: %w", component, index, err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if readyOnly && !PodReady(&p) {
			continue
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// PodReady reports whether a pod is running, not terminating, with Ready=True.
func PodReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
		return false
	}
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// PodURL returns a base URL that reaches the pod's port 8080 from this process: its pod
// IP, since pods bind their pod IP (port-forwarding, which dials localhost inside the pod,
// cannot reach them). The local cluster's pod IPs are loopback addresses; on kind, the e2e
// script routes the pod CIDR through the kind node.
func PodURL(p *corev1.Pod) string {
	return fmt.Sprintf("http://%s:%d", p.Status.PodIP, Port)
}

// Token reads the index's bearer token from its Secret.
func (c *Cluster) Token(ctx context.Context, ns, index string) (string, error) {
	var sec corev1.Secret
	if err := c.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: index + "-token"}, &sec); err != nil {
		return "", fmt.Errorf("reading token Secret of %s: %w", index, err)
	}
	tok := strings.TrimSpace(string(sec.Data["token"]))
	if tok == "" {
		return "", fmt.Errorf("token Secret of %s has no token", index)
	}
	return tok, nil
}

// Router returns clients for every ready router pod of the index.
func (c *Cluster) Router(ctx context.Context, ns, index string) (*Routers, error) {
	tok, err := c.Token(ctx, ns, index)
	if err != nil {
		return nil, err
	}
	r := &Routers{cluster: c, ns: ns, index: index, token: tok}
	if err := r.Refresh(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Routers spreads requests over the ready router pods, as a Service would, and retries a
// request whose router went away (connection refused or reset) on another router once.
type Routers struct {
	cluster *Cluster
	ns      string
	index   string
	token   string

	mu      sync.Mutex
	clients []*client.Client
	next    int
}

// Refresh re-lists the ready router pods.
func (r *Routers) Refresh(ctx context.Context) error {
	pods, err := r.cluster.Pods(ctx, r.ns, r.index, "router", -1, true)
	if err != nil {
		return err
	}
	if len(pods) == 0 {
		return fmt.Errorf("index %s/%s has no ready router pod", r.ns, r.index)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	var clients []*client.Client
	for i := range pods {
		clients = append(clients, client.New(PodURL(&pods[i]), client.WithToken(r.token), client.WithHTTPClient(hc)))
	}
	r.mu.Lock()
	r.clients = clients
	r.mu.Unlock()
	return nil
}

func (r *Routers) pick() *client.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	return r.clients[r.next%len(r.clients)]
}

// Do runs call against one router; if the router cannot be reached (not an API error),
// it refreshes the router list and tries once more.
func (r *Routers) Do(ctx context.Context, call func(*client.Client) error) error {
	err := call(r.pick())
	if err == nil || isAPIError(err) || ctx.Err() != nil {
		return err
	}
	if rerr := r.Refresh(ctx); rerr != nil {
		return fmt.Errorf("%w (and refreshing routers: %v)", err, rerr)
	}
	return call(r.pick())
}

func isAPIError(err error) bool {
	var apiErr *client.APIError
	return errors.As(err, &apiErr)
}

// ShardLoad fetches /v1/load of every ready pod of one shard.
func (c *Cluster) ShardLoad(ctx context.Context, ns, index string, shard int) (map[string]*client.LoadReport, error) {
	pods, err := c.Pods(ctx, ns, index, "shard", shard, true)
	if err != nil {
		return nil, err
	}
	out := map[string]*client.LoadReport{}
	for i := range pods {
		rep, err := client.New(PodURL(&pods[i])).Load(ctx)
		if err != nil {
			return nil, fmt.Errorf("load of %s: %w", pods[i].Name, err)
		}
		out[pods[i].Name] = rep
	}
	return out, nil
}

// PodLogs returns the tail of a pod's container logs: through the apiserver, or from the
// local cluster's log directory when the apiserver cannot serve them.
func (c *Cluster) PodLogs(ctx context.Context, p *corev1.Pod, tailLines int64) string {
	var b strings.Builder
	for _, ctr := range p.Spec.Containers {
		raw, err := c.Kube.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: ctr.Name, TailLines: &tailLines}).DoRaw(ctx)
		if err != nil && c.LogDir != "" {
			raw, err = tailFile(filepath.Join(c.LogDir, fmt.Sprintf("%s_%s_%s.log", p.Namespace, p.Name, ctr.Name)), int(tailLines))
		}
		fmt.Fprintf(&b, "----- %s/%s [%s]\n", p.Namespace, p.Name, ctr.Name)
		if err != nil {
			fmt.Fprintf(&b, "(no logs: %v)\n", err)
			continue
		}
		b.Write(raw)
	}
	return b.String()
}

func tailFile(path string, lines int) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	all := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return []byte(strings.Join(all, "\n") + "\n"), nil
}

// Events returns the namespace's events, oldest first, one per line.
func (c *Cluster) Events(ctx context.Context, ns string) string {
	var list corev1.EventList
	if err := c.Client.List(ctx, &list, ctrlclient.InNamespace(ns)); err != nil {
		return "listing events: " + err.Error()
	}
	// Events from the events.k8s.io API carry EventTime, older ones LastTimestamp.
	when := func(e *corev1.Event) time.Time {
		if !e.LastTimestamp.IsZero() {
			return e.LastTimestamp.Time
		}
		return e.EventTime.Time
	}
	sort.Slice(list.Items, func(i, j int) bool { return when(&list.Items[i]).Before(when(&list.Items[j])) })
	var b strings.Builder
	for i := range list.Items {
		e := &list.Items[i]
		fmt.Fprintf(&b, "%s %s %s/%s %s: %s\n", when(e).Format(time.RFC3339), e.Type,
			e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
	}
	return b.String()
}
