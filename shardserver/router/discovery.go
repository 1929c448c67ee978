package router

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/kube"
)

// Labels the operator puts on shard Pods (DESIGN.md section 6).
const (
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelShard     = "annshard.io/shard"
	ComponentShard = "shard"
)

// Endpoint is one ready replica of a shard. Ordinal 0 is the shard's primary.
type Endpoint struct {
	URL     string
	Ordinal int
	Name    string // pod name, or the URL for static endpoints; used in metrics
	// Draining is set by the pod's client.DrainAnnotation: the router stops choosing the
	// replica for new requests (see Router.Status).
	Draining bool
}

// ErrBadShards is returned for a malformed --shards list.
var ErrBadShards = errors.New("bad shard list")

// ParseStaticShards parses --shards: "0=http://a,http://b;1=http://c". The first URL of
// a shard is its primary (ordinal 0); the others are read replicas in order. Shards must
// be numbered 0..n-1 without gaps, so the list cannot silently leave a shard out.
func ParseStaticShards(spec string) (map[int][]Endpoint, error) {
	out := map[int][]Endpoint{}
	for part := range strings.SplitSeq(spec, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, urls, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %q has no '='", ErrBadShards, part)
		}
		shard, err := strconv.Atoi(strings.TrimSpace(k))
		if err != nil || shard < 0 {
			return nil, fmt.Errorf("%w: shard number %q", ErrBadShards, k)
		}
		if _, dup := out[shard]; dup {
			return nil, fmt.Errorf("%w: shard %d listed twice", ErrBadShards, shard)
		}
		var eps []Endpoint
		for u := range strings.SplitSeq(urls, ",") {
			u = strings.TrimRight(strings.TrimSpace(u), "/")
			pu, err := url.Parse(u)
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				return nil, fmt.Errorf("%w: shard %d: %q is not an http(s) URL", ErrBadShards, shard, u)
			}
			eps = append(eps, Endpoint{URL: u, Ordinal: len(eps), Name: pu.Host})
		}
		out[shard] = eps
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no shards", ErrBadShards)
	}
	for k := range len(out) {
		if _, ok := out[k]; !ok {
			return nil, fmt.Errorf("%w: shards must be numbered 0..%d, %d is missing", ErrBadShards, len(out)-1, k)
		}
	}
	return out, nil
}

// PodSelector returns the label selector of the shard Pods of an index.
func PodSelector(index string) string {
	return LabelInstance + "=" + index + "," + LabelComponent + "=" + ComponentShard
}

// EndpointsFromPods turns the shard Pods of an index into the ready endpoints of each
// shard, sorted by ordinal. A Pod counts when it is Ready, has an IP, is not being
// deleted, carries a valid shard label and a name ending in -<ordinal> (StatefulSet). A
// Pod with the drain annotation is kept, marked Draining.
// Everything else is skipped rather than an error: a half-created Pod is normal. The
// port is the Pod's container port named "http" (what the operator declares), else
// defaultPort.
func EndpointsFromPods(pods []*corev1.Pod, defaultPort int) map[int][]Endpoint {
	out := map[int][]Endpoint{}
	for _, p := range pods {
		if p == nil || p.DeletionTimestamp != nil || p.Status.PodIP == "" || !kube.PodReady(p) {
			continue
		}
		shard, err := strconv.Atoi(p.Labels[LabelShard])
		if err != nil || shard < 0 {
			continue
		}
		ord, ok := ordinalOf(p.Name)
		if !ok {
			continue
		}
		port := defaultPort
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == "http" && cp.ContainerPort > 0 {
					port = int(cp.ContainerPort)
				}
			}
		}
		out[shard] = append(out[shard], Endpoint{
			URL:      "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port)),
			Ordinal:  ord,
			Name:     p.Name,
			Draining: p.Annotations[client.DrainAnnotation] == "true",
		})
	}
	for _, eps := range out {
		slices.SortFunc(eps, func(a, b Endpoint) int { return a.Ordinal - b.Ordinal })
	}
	return out
}

// ordinalOf returns the StatefulSet ordinal at the end of a pod name ("idx-shard-2-0" -> 0).
func ordinalOf(name string) (int, bool) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 || i == len(name)-1 {
		return 0, false
	}
	n, err := strconv.Atoi(name[i+1:])
	return n, err == nil && n >= 0
}
