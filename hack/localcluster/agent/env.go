package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Reasons the agent reports in a waiting container state, the same words a kubelet
// uses so that tools and people read them the same way.
const (
	reasonImagePull    = "ErrImagePull"
	reasonConfigError  = "CreateContainerConfigError"
	reasonStartError   = "StartError"
	reasonCrashLoop    = "CrashLoopBackOff"
	reasonContainerCrt = "ContainerCreating"
	reasonPodInit      = "PodInitializing"
)

// containerError is a failure to start a container, carrying the waiting reason.
type containerError struct {
	reason string
	err    error
}

func (e *containerError) Error() string { return e.err.Error() }
func (e *containerError) Unwrap() error { return e.err }

func configErr(format string, a ...any) error {
	return &containerError{reason: reasonConfigError, err: fmt.Errorf(format, a...)}
}

// imageRepo is an image's last path element with tag and digest stripped:
// "ghcr.io/annshard/shardserver:v0.1.0" -> "shardserver".
func imageRepo(image string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndexByte(image, '/'); i >= 0 {
		image = image[i+1:]
	}
	if i := strings.IndexByte(image, ':'); i >= 0 {
		image = image[:i]
	}
	return image
}

// resolveImage maps an image to a local binary: built-in and `up --image` mappings
// first, then <state>/images (lines "repository=path"), read on every start so a
// mapping can be added while the cluster runs.
func (a *Agent) resolveImage(image string) (string, error) {
	repo := imageRepo(image)
	images := map[string]string{}
	for k, v := range a.cfg.Images {
		images[k] = v
	}
	if f, err := os.Open(filepath.Join(a.cfg.StateDir, "images")); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			line := strings.TrimSpace(s.Text())
			if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
				images[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
		_ = f.Close()
	}
	bin, ok := images[repo]
	if !ok {
		known := make([]string, 0, len(images))
		for k := range images {
			known = append(known, k)
		}
		sort.Strings(known)
		return "", &containerError{reason: reasonImagePull, err: fmt.Errorf(
			"image %q: no local binary for repository %q (known: %s; add one with `up --image %s=PATH` or a line in %s)",
			image, repo, strings.Join(known, ", "), repo, filepath.Join(a.cfg.StateDir, "images"))}
	}
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", &containerError{reason: reasonImagePull, err: fmt.Errorf(
			"image %q maps to %s, which is not an executable file (build it first, e.g. `make build`)", image, bin)}
	}
	return bin, nil
}

// argv builds the process arguments the way a container runtime would, with the
// mapped binary as the image's entrypoint: a command whose first element names the
// binary (["shardserver", "serve"] or ["/manager"]) runs the binary with the rest.
func argv(bin, repo string, c *corev1.Container, env map[string]string) []string {
	cmd := expandAll(c.Command, env)
	args := expandAll(c.Args, env)
	if len(cmd) == 0 {
		return append([]string{bin}, args...)
	}
	if base := filepath.Base(cmd[0]); base == filepath.Base(bin) || base == repo {
		return append(append([]string{bin}, cmd[1:]...), args...)
	}
	return append(cmd, args...)
}

func expandAll(in []string, env map[string]string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, env)
	}
	return out
}

// expand replaces $(VAR) with env's value as Kubernetes does: $$ is a literal $, and
// a reference to an unknown variable is left as written.
func expand(s string, env map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// containerEnv resolves a container's environment in Kubernetes order: envFrom, then
// env entries in turn (each may refer to earlier ones with $(VAR)).
func (a *Agent) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container, podIP string) ([]string, map[string]string, error) {
	env := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}
	set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	set("HOME", "/root")
	set("HOSTNAME", podHostname(pod))
	port := strconv.Itoa(a.cfg.APIServerPort)
	set("KUBERNETES_SERVICE_HOST", "127.0.0.1")
	set("KUBERNETES_SERVICE_PORT", port)
	set("KUBERNETES_SERVICE_PORT_HTTPS", port)
	set("KUBERNETES_PORT", "tcp://127.0.0.1:"+port)

	cs := a.cs
	for _, src := range c.EnvFrom {
		switch {
		case src.ConfigMapRef != nil:
			cm, err := cs.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, src.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if optional(src.ConfigMapRef.Optional) {
					continue
				}
				return nil, nil, configErr("envFrom configmap %q: %w", src.ConfigMapRef.Name, err)
			}
			for k, v := range cm.Data {
				set(src.Prefix+k, v)
			}
		case src.SecretRef != nil:
			s, err := cs.CoreV1().Secrets(pod.Namespace).Get(ctx, src.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if optional(src.SecretRef.Optional) {
					continue
				}
				return nil, nil, configErr("envFrom secret %q: %w", src.SecretRef.Name, err)
			}
			for k, v := range s.Data {
				set(src.Prefix+k, string(v))
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, env))
			continue
		}
		v, skip, err := a.envValue(ctx, pod, c, podIP, e.ValueFrom)
		if err != nil {
			return nil, nil, configErr("env %s: %w", e.Name, err)
		}
		if !skip {
			set(e.Name, v)
		}
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+env[k])
	}
	return out, env, nil
}

func optional(b *bool) bool { return b != nil && *b }

func podHostname(pod *corev1.Pod) string {
	if pod.Spec.Hostname != "" {
		return pod.Spec.Hostname
	}
	return pod.Name
}

// envValue resolves one valueFrom; skip is true for a missing optional key.
func (a *Agent) envValue(ctx context.Context, pod *corev1.Pod, c *corev1.Container, podIP string, src *corev1.EnvVarSource) (v string, skip bool, err error) {
	switch {
	case src.FieldRef != nil:
		v, err := fieldValue(pod, src.FieldRef.FieldPath, podIP)
		return v, false, err
	case src.ResourceFieldRef != nil:
		v, err := a.resourceValue(c, src.ResourceFieldRef)
		return v, false, err
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := a.cs.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return "", optional(ref.Optional), ignoreIf(optional(ref.Optional), fmt.Errorf("secret %q: %w", ref.Name, err))
		}
		b, ok := s.Data[ref.Key]
		if !ok {
			return "", optional(ref.Optional), ignoreIf(optional(ref.Optional), fmt.Errorf("secret %q has no key %q", ref.Name, ref.Key))
		}
		return string(b), false, nil
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := a.cs.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return "", optional(ref.Optional), ignoreIf(optional(ref.Optional), fmt.Errorf("configmap %q: %w", ref.Name, err))
		}
		s, ok := cm.Data[ref.Key]
		if !ok {
			return "", optional(ref.Optional), ignoreIf(optional(ref.Optional), fmt.Errorf("configmap %q has no key %q", ref.Name, ref.Key))
		}
		return s, false, nil
	}
	return "", false, errors.New("unsupported valueFrom")
}

func ignoreIf(cond bool, err error) error {
	if cond {
		return nil
	}
	return err
}

// fieldValue is the downward API: the field paths Kubernetes allows in env and in
// downwardAPI volumes.
func fieldValue(pod *corev1.Pod, path, podIP string) (string, error) {
	if k, ok := bracketKey(path, "metadata.labels"); ok {
		return pod.Labels[k], nil
	}
	if k, ok := bracketKey(path, "metadata.annotations"); ok {
		return pod.Annotations[k], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return "127.0.0.1", nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

func bracketKey(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}

func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q\n", k, m[k])
	}
	return b.String()
}

// resourceValue resolves limits/requests; an unset limit is the node's allocatable,
// as on a kubelet.
func (a *Agent) resourceValue(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("unsupported resourceFieldRef %q", ref.Resource)
	}
	var q resource.Quantity
	var found bool
	switch kind {
	case "limits":
		q, found = c.Resources.Limits[corev1.ResourceName(name)]
	case "requests":
		q, found = c.Resources.Requests[corev1.ResourceName(name)]
	default:
		return "", fmt.Errorf("unsupported resourceFieldRef %q", ref.Resource)
	}
	if !found {
		if kind == "requests" {
			return "0", nil
		}
		q, found = a.allocatable[corev1.ResourceName(name)]
		if !found {
			return "", fmt.Errorf("unknown resource %q", name)
		}
	}
	div := ref.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	return strconv.FormatInt(int64(math.Ceil(q.AsApproximateFloat64()/div.AsApproximateFloat64())), 10), nil
}
