package shard

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPrimaryURLOf(t *testing.T) {
	now := metav1.Now()
	tests := []struct {
		name string
		pod  corev1.Pod
		want string
	}{
		{"running", corev1.Pod{Status: corev1.PodStatus{PodIP: "127.0.16.9"}}, "http://127.0.16.9:8080"},
		{"no ip yet", corev1.Pod{}, ""},
		{"terminating", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}, Status: corev1.PodStatus{PodIP: "127.0.16.9"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := primaryURLOf(&tt.pod, "8080"); got != tt.want {
				t.Fatalf("primaryURLOf = %q, want %q", got, tt.want)
			}
		})
	}
}
