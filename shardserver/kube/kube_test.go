package kube

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPodReady(t *testing.T) {
	cond := func(s corev1.ConditionStatus) corev1.Pod {
		return corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: s}}}}
	}
	tests := []struct {
		name string
		pod  corev1.Pod
		want bool
	}{
		{"ready", cond(corev1.ConditionTrue), true},
		{"not ready", cond(corev1.ConditionFalse), false},
		{"unknown", cond(corev1.ConditionUnknown), false},
		{"no condition", corev1.Pod{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PodReady(&tt.pod); got != tt.want {
				t.Fatalf("PodReady = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestClient(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cs, ns, err := Client(kc, "team-a")
	if err != nil || cs == nil || ns != "team-a" {
		t.Fatalf("Client = %v, %q, %v", cs, ns, err)
	}
	if _, err := os.Stat(NamespaceFile); os.IsNotExist(err) {
		if _, _, err := Client(kc, ""); err == nil {
			t.Fatal("no namespace and no service account namespace file: want an error")
		}
	}
	if _, _, err := Client(filepath.Join(t.TempDir(), "missing"), "ns"); err == nil {
		t.Fatal("a missing kubeconfig must be an error")
	}
}
