package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/kube"
)

// podPort is where both shardserver roles listen in their pods.
const podPort = 8080

// The ways to reach the pods of an index; --via picks one, auto chooses.
const (
	viaAuto   = "auto"
	viaProxy  = "proxy"
	viaDirect = "direct"
)

// session is one command's connection to a cluster: the clients, the namespace and how
// to reach pods.
type session struct {
	cfg   *rest.Config
	ctrl  ctrlclient.Client
	kube  kubernetes.Interface
	ns    string
	via   string
	token string // --token, or "" to read the index's Secret
	logf  func(level int, format string, args ...any)

	proxyHC  *http.Client // the user's credentials, to the API server
	directHC *http.Client // plain HTTP to pod IPs
}

func newSession(g *globalOptions) (*session, error) {
	switch g.via {
	case viaAuto, viaProxy, viaDirect:
	default:
		return nil, codef(exitUsage, "--via must be auto, proxy or direct, not %q", g.via)
	}
	cfg, err := g.config.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	ns, _, err := g.config.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, fmt.Errorf("reading the namespace from kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = annv1alpha1.AddToScheme(scheme)
	c, err := ctrlclient.New(cfg, ctrlclient.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("connecting to the cluster: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the cluster: %w", err)
	}
	proxyHC, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the API server client: %w", err)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	return &session{
		cfg: cfg, ctrl: c, kube: kube, ns: ns, via: g.via, token: g.token, logf: g.logf,
		proxyHC: proxyHC, directHC: &http.Client{Transport: t},
	}, nil
}

// index fetches the AnnIndex; a missing one is exitNotFound.
func (s *session) index(ctx context.Context, name string) (*annv1alpha1.AnnIndex, error) {
	idx := &annv1alpha1.AnnIndex{}
	err := s.ctrl.Get(ctx, types.NamespacedName{Namespace: s.ns, Name: name}, idx)
	switch {
	case apierrors.IsNotFound(err):
		return nil, codef(exitNotFound, "annindex %q not found in namespace %q (kubectl get annidx -A lists them)", name, s.ns)
	case err != nil:
		return nil, fmt.Errorf("reading annindex %s/%s: %w", s.ns, name, err)
	}
	return idx, nil
}

// writeToken returns --token, or the token in the index's Secret.
func (s *session) writeToken(ctx context.Context, index string) (string, error) {
	if s.token != "" {
		s.logf(1, "using the write token given with --token")
		return s.token, nil
	}
	name := index + "-token"
	var sec corev1.Secret
	err := s.ctrl.Get(ctx, types.NamespacedName{Namespace: s.ns, Name: name}, &sec)
	switch {
	case apierrors.IsForbidden(err):
		return "", fmt.Errorf("you may not read Secret %s/%s, which holds the write token: pass it with --token", s.ns, name)
	case apierrors.IsNotFound(err):
		return "", fmt.Errorf("Secret %s/%s with the write token does not exist (yet?): pass the token with --token", s.ns, name)
	case err != nil:
		return "", fmt.Errorf("reading Secret %s/%s: %w", s.ns, name, err)
	}
	tok := strings.TrimSpace(string(sec.Data["token"]))
	if tok == "" {
		return "", fmt.Errorf("Secret %s/%s has no token key", s.ns, name)
	}
	s.logf(1, "using the write token from Secret %s/%s", s.ns, name)
	return tok, nil
}

// podsOf lists the pods of one component ("shard" or "router") of an index, sorted by name.
func (s *session) podsOf(ctx context.Context, index, component string) ([]corev1.Pod, error) {
	var list corev1.PodList
	err := s.ctrl.List(ctx, &list, ctrlclient.InNamespace(s.ns), ctrlclient.MatchingLabels{
		"app.kubernetes.io/instance":  index,
		"app.kubernetes.io/component": component,
		"app.kubernetes.io/name":      "annshard",
	})
	if err != nil {
		return nil, fmt.Errorf("listing the %s pods of %s: %w", component, index, err)
	}
	slices.SortFunc(list.Items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return list.Items, nil
}

// podReady: running, not terminating, with an IP and Ready=True.
func podReady(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && kube.PodReady(p)
}

// proxyable reports whether the API server may proxy to ip: it refuses addresses that are
// not global unicast (loopback, link-local), which is every pod of the local cluster.
func proxyable(ip string) bool {
	a := net.ParseIP(ip)
	return a != nil && a.IsGlobalUnicast()
}

// unproxyable returns the first pod of pods whose IP the API server will not proxy to,
// or nil: with --via auto, such a pod means the pods are reached at their IPs directly.
func unproxyable(pods []corev1.Pod) *corev1.Pod {
	for i := range pods {
		if ip := pods[i].Status.PodIP; ip != "" && !proxyable(ip) {
			return &pods[i]
		}
	}
	return nil
}

// tokenTransport adds the write token in client.TokenHeader to every request: the API
// server consumes the Authorization header, so the router also accepts this one.
type tokenTransport struct {
	token string
	next  http.RoundTripper
}

func (t *tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(client.TokenHeader, t.token)
	return t.next.RoundTrip(r)
}

// proxyURL is the API server URL that proxies to resource (services or pods) name:port.
func (s *session) proxyURL(resource, nameAndPort string) string {
	u := s.kube.CoreV1().RESTClient().Get().Namespace(s.ns).Resource(resource).Name(nameAndPort).SubResource("proxy").URL()
	return strings.TrimRight(u.String(), "/")
}

// apiClient returns an annshard API client of base through the API server (proxy) or
// directly, with the write token when token is set.
func (s *session) apiClient(base string, proxy bool, token string) *client.Client {
	if !proxy {
		opts := []client.Option{client.WithHTTPClient(s.directHC)}
		if token != "" {
			opts = append(opts, client.WithToken(token))
		}
		return client.New(base, opts...)
	}
	hc := s.proxyHC
	if token != "" {
		hc = &http.Client{Transport: &tokenTransport{token: token, next: s.proxyHC.Transport}, Timeout: s.proxyHC.Timeout}
	}
	return client.New(base, client.WithHTTPClient(hc))
}

// probe answers whether c's /readyz answers within a short time; the error says why not.
func probe(ctx context.Context, c *client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	return c.Ready(ctx)
}

// routerPool spreads calls over the ways to one index's routers: the Service through
// the API server proxy, or every ready router pod directly.
type routerPool struct {
	desc    string
	mu      sync.Mutex
	clients []*client.Client
	next    int
}

func (p *routerPool) pick() *client.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	return p.clients[p.next%len(p.clients)]
}

// routers finds a way to the index's routers, as --via says: the Service through the API
// server proxy works on any cluster the user can reach; where it cannot serve (pod IPs
// the API server refuses to proxy to, a Service without endpoints) the pod IPs are tried
// directly. The path taken is logged at -v 1.
func (s *session) routers(ctx context.Context, index, token string) (*routerPool, error) {
	pods, err := s.podsOf(ctx, index, "router")
	if err != nil && !apierrors.IsForbidden(errors.Unwrap(err)) {
		return nil, err
	}
	var ready []corev1.Pod
	for i := range pods {
		if podReady(&pods[i]) {
			ready = append(ready, pods[i])
		}
	}
	svc := index + "-router"
	tryProxy := func() (*routerPool, error) {
		c := s.apiClient(s.proxyURL("services", svc+":http"), true, token)
		if err := probe(ctx, c); err != nil {
			return nil, fmt.Errorf("through the API server's proxy to Service %s: %w", svc, err)
		}
		s.logf(1, "reaching the routers through the API server's service proxy (Service %s/%s)", s.ns, svc)
		return &routerPool{desc: "Service " + svc + " through the API server proxy", clients: []*client.Client{c}}, nil
	}
	tryDirect := func() (*routerPool, error) {
		if len(ready) == 0 {
			return nil, fmt.Errorf("directly: no ready router pod of %s", index)
		}
		// Probed in parallel (like podClients), so a dead pod costs one probe timeout, not one each.
		all := make([]*client.Client, len(ready))
		probeErrs := make([]error, len(ready))
		var wg sync.WaitGroup
		for i := range ready {
			all[i] = s.apiClient(fmt.Sprintf("http://%s", net.JoinHostPort(ready[i].Status.PodIP, fmt.Sprint(podPort))), false, token)
			wg.Go(func() {
				if err := probe(ctx, all[i]); err != nil {
					probeErrs[i] = fmt.Errorf("pod %s at %s: %w", ready[i].Name, ready[i].Status.PodIP, err)
				}
			})
		}
		wg.Wait()
		var clients []*client.Client
		for i, c := range all {
			if probeErrs[i] == nil {
				clients = append(clients, c)
			}
		}
		if len(clients) == 0 {
			return nil, fmt.Errorf("directly to the router pod IPs: %w", errors.Join(probeErrs...)) // Join skips the nils
		}
		s.logf(1, "reaching the routers at their pod IPs directly (%d of %d ready router pods answer)", len(clients), len(ready))
		return &routerPool{desc: fmt.Sprintf("%d router pod(s) directly", len(clients)), clients: clients}, nil
	}
	switch s.via {
	case viaProxy:
		p, err := tryProxy()
		return p, withCode(exitUnreachable, err)
	case viaDirect:
		p, err := tryDirect()
		return p, withCode(exitUnreachable, err)
	}
	if p := unproxyable(ready); p != nil {
		s.logf(1, "router pod %s has IP %s, which the API server does not proxy to (not global unicast): trying the pod IPs directly", p.Name, p.Status.PodIP)
		pool, err := tryDirect()
		return pool, withCode(exitUnreachable, err)
	}
	pool, perr := tryProxy()
	if perr == nil {
		return pool, nil
	}
	s.logf(1, "cannot reach the routers %v; trying the pod IPs directly", perr)
	pool, derr := tryDirect()
	if derr == nil {
		return pool, nil
	}
	return nil, codef(exitUnreachable, "cannot reach the routers of %s/%s %v, nor %v (--via forces one way; -v 1 shows the attempts)", s.ns, index, perr, derr)
}

// podClients returns a client of every pod in pods that the chosen path reaches, keyed
// by pod name; pods it cannot reach are reported in the error map.
func (s *session) podClients(ctx context.Context, pods []corev1.Pod) (map[string]*podConn, map[string]error) {
	out := map[string]*podConn{}
	errs := map[string]error{}
	mode := s.via
	if mode == viaAuto {
		if p := unproxyable(pods); p != nil {
			mode = viaDirect
			s.logf(1, "pod %s has IP %s, which the API server does not proxy to: reaching pods at their IPs directly", p.Name, p.Status.PodIP)
		} else {
			mode = viaProxy
			s.logf(1, "reaching pods through the API server's pod proxy")
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range pods {
		if p.Status.PodIP == "" {
			errs[p.Name] = fmt.Errorf("no pod IP yet")
			continue
		}
		direct := "http://" + net.JoinHostPort(p.Status.PodIP, fmt.Sprint(podPort))
		var c *podConn
		if mode == viaProxy {
			c = s.podConn(s.proxyURL("pods", fmt.Sprintf("%s:%d", p.Name, podPort)), true)
		} else {
			c = s.podConn(direct, false)
		}
		wg.Go(func() {
			// Readiness is not required (top shows unready pods too); liveness is.
			ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
			defer cancel()
			err := c.api.Health(ctx)
			if err != nil && s.via == viaAuto && mode == viaProxy {
				// The pod proxy failed; the pod IP may still be reachable from here.
				d := s.podConn(direct, false)
				if derr := d.api.Health(ctx); derr == nil {
					s.logf(1, "pod %s: the API server proxy failed (%v); reached it at its IP directly", p.Name, err)
					c, err = d, nil
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[p.Name] = err
				return
			}
			out[p.Name] = c
		})
	}
	wg.Wait()
	return out, errs
}

// podConn reaches one pod: its API, and raw GETs (/metrics).
type podConn struct {
	api  *client.Client
	hc   *http.Client
	base string
}

func (s *session) podConn(base string, proxy bool) *podConn {
	hc := s.directHC
	if proxy {
		hc = s.proxyHC
	}
	return &podConn{api: s.apiClient(base, proxy, ""), hc: hc, base: base}
}

// get fetches path and returns the body of a 2xx answer.
func (p *podConn) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}
