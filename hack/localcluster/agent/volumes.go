package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// volumeFile is one file of a rendered volume.
type volumeFile struct {
	data []byte
	mode os.FileMode
}

// token is a cached service-account token and when to ask for a new one.
type token struct {
	value     string
	refreshAt time.Time
}

// podVolumes renders a pod's volumes on the host and remembers its tokens, so that a
// periodic refresh updates Secrets, ConfigMaps and expiring tokens in place, as a
// kubelet does. Only the pod's worker uses it.
type podVolumes struct {
	dir    string // <state>/pods/<uid>/volumes
	ip     string // the pod's IP, for downward-API files written before status has it
	paths  map[string]string
	tokens map[string]token
}

// prepare makes every volume's host directory exist and up to date and returns the
// host path of each volume by name.
func (a *Agent) prepare(ctx context.Context, pod *corev1.Pod, v *podVolumes) error {
	if v.paths == nil {
		v.paths, v.tokens = map[string]string{}, map[string]token{}
	}
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		host := filepath.Join(v.dir, vol.Name)
		var files map[string]volumeFile
		var err error
		switch {
		case vol.EmptyDir != nil:
			err = os.MkdirAll(host, 0o777)
		case vol.HostPath != nil:
			host = vol.HostPath.Path
			if _, err = os.Stat(host); err != nil && vol.HostPath.Type != nil && *vol.HostPath.Type == corev1.HostPathDirectoryOrCreate {
				err = os.MkdirAll(host, 0o755)
			}
		case vol.PersistentVolumeClaim != nil:
			host, err = a.claimPath(ctx, pod.Namespace, vol.PersistentVolumeClaim.ClaimName)
		case vol.Secret != nil:
			files, err = a.secretFiles(ctx, pod.Namespace, vol.Secret.SecretName, vol.Secret.Items, vol.Secret.DefaultMode, vol.Secret.Optional)
		case vol.ConfigMap != nil:
			files, err = a.configMapFiles(ctx, pod.Namespace, vol.ConfigMap.Name, vol.ConfigMap.Items, vol.ConfigMap.DefaultMode, vol.ConfigMap.Optional)
		case vol.DownwardAPI != nil:
			files, err = downwardFiles(pod, v.ip, vol.DownwardAPI.Items, vol.DownwardAPI.DefaultMode)
		case vol.Projected != nil:
			files, err = a.projectedFiles(ctx, pod, vol.Name, vol.Projected, v)
		default:
			err = errors.New("volume type not supported by the local cluster (supported: emptyDir, hostPath, persistentVolumeClaim, secret, configMap, downwardAPI, projected)")
		}
		if err == nil && files != nil {
			err = writeVolume(host, files)
		}
		if err != nil {
			return configErr("volume %q: %w", vol.Name, err)
		}
		v.paths[vol.Name] = host
	}
	return nil
}

// claimPath is the host directory of a bound claim's volume.
func (a *Agent) claimPath(ctx context.Context, ns, name string) (string, error) {
	pvc, err := a.cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("claim %q: %w", name, err)
	}
	if pvc.Spec.VolumeName == "" || pvc.Status.Phase != corev1.ClaimBound {
		return "", fmt.Errorf("claim %q is not bound yet", name)
	}
	pv, err := a.cs.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("volume %q of claim %q: %w", pvc.Spec.VolumeName, name, err)
	}
	switch {
	case pv.Spec.HostPath != nil:
		return pv.Spec.HostPath.Path, os.MkdirAll(pv.Spec.HostPath.Path, 0o777)
	case pv.Spec.Local != nil:
		return pv.Spec.Local.Path, nil
	}
	return "", fmt.Errorf("volume %q is neither hostPath nor local", pv.Name)
}

func fileMode(item, def *int32, fallback os.FileMode) os.FileMode {
	switch {
	case item != nil:
		return os.FileMode(*item)
	case def != nil:
		return os.FileMode(*def)
	}
	return fallback
}

// keyFiles turns a Secret's or ConfigMap's data into files, honouring items.
func keyFiles(kind, name string, data map[string][]byte, items []corev1.KeyToPath, def *int32, out map[string]volumeFile) error {
	if len(items) == 0 {
		for k, b := range data {
			out[k] = volumeFile{b, fileMode(nil, def, 0o644)}
		}
		return nil
	}
	for _, it := range items {
		b, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("%s %q has no key %q", kind, name, it.Key)
		}
		out[it.Path] = volumeFile{b, fileMode(it.Mode, def, 0o644)}
	}
	return nil
}

func (a *Agent) secretFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, def *int32, opt *bool) (map[string]volumeFile, error) {
	out := map[string]volumeFile{}
	s, err := a.cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if optional(opt) {
			return out, nil
		}
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	return out, keyFiles("secret", name, s.Data, items, def, out)
}

func (a *Agent) configMapFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, def *int32, opt *bool) (map[string]volumeFile, error) {
	out := map[string]volumeFile{}
	cm, err := a.cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if optional(opt) {
			return out, nil
		}
		return nil, fmt.Errorf("configmap %q: %w", name, err)
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, s := range cm.Data {
		data[k] = []byte(s)
	}
	for k, b := range cm.BinaryData {
		data[k] = b
	}
	return out, keyFiles("configmap", name, data, items, def, out)
}

func downwardFiles(pod *corev1.Pod, podIP string, items []corev1.DownwardAPIVolumeFile, def *int32) (map[string]volumeFile, error) {
	out := map[string]volumeFile{}
	for _, it := range items {
		if it.FieldRef == nil {
			return nil, fmt.Errorf("downwardAPI item %q: only fieldRef is supported", it.Path)
		}
		v, err := fieldValue(pod, it.FieldRef.FieldPath, podIP)
		if err != nil {
			return nil, fmt.Errorf("downwardAPI item %q: %w", it.Path, err)
		}
		out[it.Path] = volumeFile{[]byte(v), fileMode(it.Mode, def, 0o644)}
	}
	return out, nil
}

// projectedFiles renders a projected volume, the form in which every pod receives
// its service-account token, the cluster CA (kube-root-ca.crt) and its namespace.
func (a *Agent) projectedFiles(ctx context.Context, pod *corev1.Pod, volName string, p *corev1.ProjectedVolumeSource, v *podVolumes) (map[string]volumeFile, error) {
	out := map[string]volumeFile{}
	for _, src := range p.Sources {
		var part map[string]volumeFile
		var err error
		switch {
		case src.Secret != nil:
			part, err = a.secretFiles(ctx, pod.Namespace, src.Secret.Name, src.Secret.Items, p.DefaultMode, src.Secret.Optional)
		case src.ConfigMap != nil:
			part, err = a.configMapFiles(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, p.DefaultMode, src.ConfigMap.Optional)
		case src.DownwardAPI != nil:
			part, err = downwardFiles(pod, v.ip, src.DownwardAPI.Items, p.DefaultMode)
		case src.ServiceAccountToken != nil:
			var tok string
			tok, err = a.serviceAccountToken(ctx, pod, volName, src.ServiceAccountToken, v)
			part = map[string]volumeFile{src.ServiceAccountToken.Path: {[]byte(tok), fileMode(nil, p.DefaultMode, 0o644)}}
		default:
			err = errors.New("projected source not supported (supported: secret, configMap, downwardAPI, serviceAccountToken)")
		}
		if err != nil {
			return nil, err
		}
		for k, f := range part {
			out[k] = f
		}
	}
	return out, nil
}

// serviceAccountToken returns a pod-bound token, asking for a new one once 80% of
// the old one's lifetime has passed (the kubelet's rule).
func (a *Agent) serviceAccountToken(ctx context.Context, pod *corev1.Pod, volName string, src *corev1.ServiceAccountTokenProjection, v *podVolumes) (string, error) {
	key := volName + "/" + src.Path
	if t, ok := v.tokens[key]; ok && time.Now().Before(t.refreshAt) {
		return t.value, nil
	}
	expiry := int64(3600)
	if src.ExpirationSeconds != nil {
		expiry = *src.ExpirationSeconds
	}
	tr := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
		ExpirationSeconds: &expiry,
		BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		tr.Spec.Audiences = []string{src.Audience}
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	start := time.Now()
	res, err := a.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting token of service account %q: %w", sa, err)
	}
	life := res.Status.ExpirationTimestamp.Sub(start)
	v.tokens[key] = token{value: res.Status.Token, refreshAt: start.Add(life * 8 / 10)}
	return res.Status.Token, nil
}

// writeVolume makes dir hold exactly files: changed files are replaced by temp file
// and rename (a reader sees the old or the new content, never half), files no
// longer listed are removed.
func writeVolume(dir string, files map[string]volumeFile) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	for rel, f := range files {
		clean := filepath.Clean(rel)
		if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("path %q leaves the volume", rel)
		}
		p := filepath.Join(dir, clean)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, f.data) {
			if fi, err := os.Stat(p); err == nil && fi.Mode().Perm() == f.mode.Perm() {
				continue
			}
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("creating dir for %s: %w", rel, err)
		}
		tmp := filepath.Join(filepath.Dir(p), ".tmp-"+filepath.Base(p))
		if err := os.WriteFile(tmp, f.data, f.mode.Perm()); err != nil {
			return fmt.Errorf("writing %s: %w", rel, err)
		}
		if err := os.Chmod(tmp, f.mode.Perm()); err != nil {
			return fmt.Errorf("chmod %s: %w", rel, err)
		}
		if err := os.Rename(tmp, p); err != nil {
			return fmt.Errorf("renaming %s: %w", rel, err)
		}
	}
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if _, keep := files[rel]; !keep {
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("removing stale %s: %w", rel, err)
			}
		}
		return nil
	})
}
