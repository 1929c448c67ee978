/*
Copyright 2026 The annshard Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package controllers

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	shardclient "github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/kube"
)

// routerStatusTimeout bounds one router's answer to GET /v1/internal/router.
const routerStatusTimeout = 2 * time.Second

// routerPoll is what the ready router pods of an index answered to
// GET /v1/internal/router, asked at once.
type routerPoll struct {
	// answers are the statuses by router pod name.
	answers map[string]*shardclient.RouterStatus
	// failed are the router pods that did not answer, with why.
	failed map[string]error
}

// pollRouters asks every ready router pod of idx (Ready, not being deleted, with an IP)
// for its status, concurrently. A router pod that is not Ready is not asked: it gets no
// traffic from the router Service, and its own routing is checked again once it is
// Ready. An index without a ready router gives an empty poll, which every check passes:
// no router, no request.
func (r *AnnIndexReconciler) pollRouters(ctx context.Context, idx *annv1alpha1.AnnIndex) (routerPoll, error) {
	poll := routerPoll{answers: map[string]*shardclient.RouterStatus{}, failed: map[string]error{}}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(idx.Namespace), client.MatchingLabels(componentLabels(idx, componentRouter))); err != nil {
		return poll, fmt.Errorf("listing router pods: %w", err)
	}
	var targets []*corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" && kube.PodReady(p) {
			targets = append(targets, p)
		}
	}
	if len(targets) == 0 {
		return poll, nil
	}
	token, err := r.indexToken(ctx, idx)
	if err != nil {
		return poll, err
	}
	hc := r.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: routerStatusTimeout}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range targets {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, routerStatusTimeout)
			defer cancel()
			st, err := shardclient.New(podURL(p),
				shardclient.WithToken(token), shardclient.WithHTTPClient(hc)).RouterStatus(rctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				poll.failed[p.Name] = err
				return
			}
			poll.answers[p.Name] = st
		})
	}
	wg.Wait()
	return poll, nil
}

// all says whether every router asked answered and its answer satisfies ok; if not,
// which routers did not, each with the reason (ok's, or the error), sorted by pod name.
func (p routerPoll) all(ok func(*shardclient.RouterStatus) (bool, string)) (bool, []string) {
	var not []string
	for name, err := range p.failed {
		not = append(not, fmt.Sprintf("router %s: %v", name, err))
	}
	for name, st := range p.answers {
		if good, why := ok(st); !good {
			not = append(not, fmt.Sprintf("router %s: %s", name, why))
		}
	}
	slices.Sort(not)
	return len(not) == 0, not
}

// routersAll asks every ready router pod of idx and says whether all of them answered
// and satisfy ok (see routerPoll.all); the reconciler's one question to the routers, for
// a drain here and, for the migration executor, "every router adopted epoch E"
// (epochAdopted).
func (r *AnnIndexReconciler) routersAll(ctx context.Context, idx *annv1alpha1.AnnIndex, ok func(*shardclient.RouterStatus) (bool, string)) (bool, []string, error) {
	poll, err := r.pollRouters(ctx, idx)
	if err != nil {
		return false, nil, err
	}
	good, not := poll.all(ok)
	return good, not, nil
}

// epochAdopted is the check that a router routes by routing epoch e or a later one.
func epochAdopted(e uint64) func(*shardclient.RouterStatus) (bool, string) {
	return func(st *shardclient.RouterStatus) (bool, string) {
		if st.Epoch >= e {
			return true, ""
		}
		return false, fmt.Sprintf("routes by epoch %d, not yet %d", st.Epoch, e)
	}
}

// podDrained is the check that a router sends no new request to pod (a replica of
// shard k) and has none open to it: the router does not list it, or lists it as
// draining with nothing in flight.
func podDrained(k int32, pod string) func(*shardclient.RouterStatus) (bool, string) {
	return func(st *shardclient.RouterStatus) (bool, string) {
		for _, sh := range st.Shards {
			if sh.Shard != int(k) {
				continue
			}
			for _, ep := range sh.Endpoints {
				switch {
				case ep.Pod != pod:
				case !ep.Draining:
					return false, "still routes to " + pod
				case ep.InFlight > 0:
					return false, fmt.Sprintf("%d requests in flight to %s", ep.InFlight, pod)
				}
			}
		}
		return true, ""
	}
}

// indexToken reads the bearer token the operator generated for idx.
func (r *AnnIndexReconciler) indexToken(ctx context.Context, idx *annv1alpha1.AnnIndex) (string, error) {
	var sec corev1.Secret
	if err := r.Get(ctx, client.ObjectKey{Namespace: idx.Namespace, Name: tokenSecretName(idx)}, &sec); err != nil {
		return "", fmt.Errorf("reading token Secret %s: %w", tokenSecretName(idx), err)
	}
	tok := strings.TrimSpace(string(sec.Data[tokenKey]))
	if tok == "" {
		return "", fmt.Errorf("token Secret %s has no %q", tokenSecretName(idx), tokenKey)
	}
	return tok, nil
}

// podURL is the base URL of a pod's HTTP API: its IP (never DNS: a restarted pod gets a
// new IP, which the cache shows at once) and podHTTPPort; IPv6 addresses in brackets.
func podURL(p *corev1.Pod) string {
	return "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(podHTTPPort(p))))
}

// podHTTPPort is the pod's container port named "http", else httpPort.
func podHTTPPort(p *corev1.Pod) int32 {
	for _, ctr := range p.Spec.Containers {
		for _, cp := range ctr.Ports {
			if cp.Name == "http" && cp.ContainerPort > 0 {
				return cp.ContainerPort
			}
		}
	}
	return httpPort
}
