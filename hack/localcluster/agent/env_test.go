package agent

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestImageRepo(t *testing.T) {
	for _, tc := range []struct{ image, want string }{
		{"shardserver", "shardserver"},
		{"annshard/shardserver:v0.1.0", "shardserver"},
		{"ghcr.io/annshard/annshard-operator:latest", "annshard-operator"},
		{"localhost:5000/manager", "manager"},
		{"localhost:5000/team/manager:v1@sha256:abcd", "manager"},
		{"registry.example/x/shardserver@sha256:0123", "shardserver"},
	} {
		t.Run(tc.image, func(t *testing.T) {
			if got := imageRepo(tc.image); got != tc.want {
				t.Errorf("imageRepo(%q) = %q, want %q", tc.image, got, tc.want)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "1", "POD_IP": "127.0.16.2"}
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"--listen=$(POD_IP):8080", "--listen=127.0.16.2:8080"},
		{"$(A)$(A)", "11"},
		{"$(MISSING)", "$(MISSING)"},
		{"$$(A)", "$(A)"},
		{"cost $5", "cost $5"},
		{"open $(A", "open $(A"},
		{"trailing $", "trailing $"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := expand(tc.in, env); got != tc.want {
				t.Errorf("expand(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestArgv(t *testing.T) {
	env := map[string]string{"POD_IP": "127.0.16.9"}
	const bin = "/repo/bin/shardserver"
	for _, tc := range []struct {
		name          string
		command, args []string
		want          []string
	}{
		{"entrypoint only", nil, nil, []string{bin}},
		{"args only", nil, []string{"serve", "--listen=$(POD_IP):80"}, []string{bin, "serve", "--listen=127.0.16.9:80"}},
		{"command names the binary", []string{"shardserver", "serve"}, []string{"--x"}, []string{bin, "serve", "--x"}},
		{"command is the binary's path in the image", []string{"/shardserver", "route"}, nil, []string{bin, "route"}},
		{"other program", []string{"/bin/sh", "-c", "echo $(POD_IP)"}, nil, []string{"/bin/sh", "-c", "echo 127.0.16.9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &corev1.Container{Command: tc.command, Args: tc.args}
			if got := argv(bin, "shardserver", c, env); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("argv = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFieldValue(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1",
			Labels: map[string]string{"app": "x", "b": "y"}, Annotations: map[string]string{"k": "v"}},
		Spec: corev1.PodSpec{NodeName: "local", ServiceAccountName: "sa"},
	}
	for _, tc := range []struct {
		path, want string
		wantErr    bool
	}{
		{path: "metadata.name", want: "p"},
		{path: "metadata.namespace", want: "ns"},
		{path: "metadata.uid", want: "u1"},
		{path: "metadata.labels['app']", want: "x"},
		{path: "metadata.annotations['k']", want: "v"},
		{path: "metadata.labels", want: "app=\"x\"\nb=\"y\"\n"},
		{path: "spec.nodeName", want: "local"},
		{path: "spec.serviceAccountName", want: "sa"},
		{path: "status.podIP", want: "127.0.16.3"},
		{path: "status.hostIP", want: "127.0.0.1"},
		{path: "spec.containers", wantErr: true},
	} {
		t.Run(tc.path, func(t *testing.T) {
			got, err := fieldValue(pod, tc.path, "127.0.16.3")
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("fieldValue(%q) = %q, %v; want %q, error %v", tc.path, got, err, tc.want, tc.wantErr)
			}
		})
	}
}
