// Package kube holds the few Kubernetes helpers the shard server, the router and the
// operator share: a clientset for a pod (in-cluster) or a kubeconfig, and pod readiness.
// Everything here is stateless and safe for concurrent use.
package kube

import (
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// NamespaceFile is where a pod's service account namespace is mounted.
const NamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Client builds a clientset from kubeconfig, or from the in-cluster config when it is
// empty, and resolves the namespace: the one given, else the pod's own.
func Client(kubeconfig, namespace string) (kubernetes.Interface, string, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes config: %w", err)
	}
	if namespace == "" {
		b, err := os.ReadFile(NamespaceFile)
		if err != nil {
			return nil, "", fmt.Errorf("no namespace given and no service account namespace: %w", err)
		}
		namespace = strings.TrimSpace(string(b))
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, namespace, nil
}

// PodReady reports whether the pod's Ready condition is True.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
