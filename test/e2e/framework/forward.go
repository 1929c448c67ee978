package framework

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

var errorsAs = errors.As

// forward is an open port-forward to one pod's port 8080.
type forward struct {
	stop chan struct{}
	url  string
}

func (f *forward) close() { close(f.stop) }

// portForward opens (or reuses) a tunnel to the pod through the apiserver and returns the
// local URL. Used where the test machine cannot reach pod IPs (kind).
func (c *Cluster) portForward(ctx context.Context, p *corev1.Pod) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.forwards[string(p.UID)]; ok {
		return f.url, nil
	}
	transport, upgrader, err := spdy.RoundTripperFor(c.Config)
	if err != nil {
		return "", fmt.Errorf("port-forward transport: %w", err)
	}
	req := c.Kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(p.Namespace).Name(p.Name).SubResource("portforward")
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, (*url.URL)(req.URL()))
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", Port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return "", fmt.Errorf("port-forward to %s: %w", p.Name, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errc:
		return "", fmt.Errorf("port-forward to %s: %w", p.Name, err)
	case <-ctx.Done():
		close(stop)
		return "", ctx.Err()
	case <-time.After(30 * time.Second):
		close(stop)
		return "", fmt.Errorf("port-forward to %s: not ready after 30s", p.Name)
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) == 0 {
		close(stop)
		return "", fmt.Errorf("port-forward to %s: no local port: %v", p.Name, err)
	}
	f := &forward{stop: stop, url: fmt.Sprintf("http://127.0.0.1:%d", ports[0].Local)}
	c.forwards[string(p.UID)] = f
	return f.url, nil
}
