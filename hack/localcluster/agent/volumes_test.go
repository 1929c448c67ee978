package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWriteVolume(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	steps := []struct {
		name    string
		files   map[string]volumeFile
		wantErr bool
	}{
		{"initial", map[string]volumeFile{"a": {[]byte("1"), 0o644}, "sub/b": {[]byte("2"), 0o600}}, false},
		{"update and drop", map[string]volumeFile{"a": {[]byte("changed"), 0o644}}, false},
		{"escape refused", map[string]volumeFile{"../evil": {[]byte("x"), 0o644}}, true},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			err := writeVolume(dir, s.files)
			if (err != nil) != s.wantErr {
				t.Fatalf("writeVolume: %v, want error %v", err, s.wantErr)
			}
			if s.wantErr {
				if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "evil")); err == nil {
					t.Fatal("file written outside the volume")
				}
				return
			}
			var got []string
			_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					rel, _ := filepath.Rel(dir, p)
					got = append(got, rel)
				}
				return err
			})
			if len(got) != len(s.files) {
				t.Errorf("files %v, want exactly %d", got, len(s.files))
			}
			for rel, f := range s.files {
				b, err := os.ReadFile(filepath.Join(dir, rel))
				fi, _ := os.Stat(filepath.Join(dir, rel))
				if err != nil || string(b) != string(f.data) || fi.Mode().Perm() != f.mode {
					t.Errorf("%s: %q %v (%v), want %q %v", rel, b, fi.Mode().Perm(), err, f.data, f.mode)
				}
			}
		})
	}
}

func TestStatusPatchDeletesStaleReasons(t *testing.T) {
	st := corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()},
		{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady"},
	}}
	body, err := statusPatch("uid-1", st)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Metadata struct{ UID string }
		Status   struct{ Conditions []map[string]any }
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Metadata.UID != "uid-1" {
		t.Errorf("uid precondition missing: %s", body)
	}
	ready, notReady := p.Status.Conditions[0], p.Status.Conditions[1]
	if r, ok := ready["reason"]; !ok || r != nil {
		t.Errorf("True condition must null its reason, got %v (present %v)", r, ok)
	}
	if notReady["reason"] != "ContainersNotReady" {
		t.Errorf("False condition lost its reason: %v", notReady)
	}
}
