package shard

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/annshard/annshard/shardserver/slots"
)

// namedInformers is an informer factory for the objects of namespace called name,
// filtered by the API server.
func namedInformers(cs kubernetes.Interface, namespace, name string) informers.SharedInformerFactory {
	return informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + name }))
}

// watchRoutingConfigMap adopts this shard's slots from the index's routing ConfigMap
// (<index>-routing) whenever a newer epoch appears, until ctx ends. The informer is
// filtered to that one object, so the pod's RBAC needs only get/list/watch on
// ConfigMaps in its namespace.
func (s *Server) watchRoutingConfigMap(ctx context.Context, cs kubernetes.Interface, namespace string) error {
	name := slots.ConfigMapName(s.cfg.Index)
	factory := namedInformers(cs, namespace, name)
	defer factory.Shutdown()
	on := func(obj any) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok || cm.Name != name {
			return
		}
		data, ok := cm.Data[slots.ConfigMapKey]
		if !ok {
			slog.Warn("Routing ConfigMap has no table", "configMap", name, "key", slots.ConfigMapKey)
			return
		}
		tab, err := slots.Parse([]byte(data))
		if err == nil {
			err = s.adoptTable(tab)
		}
		if err != nil {
			slog.Warn("Routing ConfigMap not applied", "configMap", name, "err", err)
		}
	}
	if _, err := factory.Core().V1().ConfigMaps().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    on,
		UpdateFunc: func(_, obj any) { on(obj) },
	}); err != nil {
		return fmt.Errorf("watching ConfigMap %s: %w", name, err)
	}
	factory.Start(ctx.Done())
	slog.Info("Watching the routing ConfigMap", "namespace", namespace, "configMap", name, "shard", s.cfg.ShardIndex)
	<-ctx.Done()
	return nil
}

// watchPrimaryPod keeps a read replica pointed at its shard's primary pod (<sts>-0): the
// pod's IP from the Kubernetes API, never DNS, so a restarted primary with a new IP is
// followed at once. The port is this server's own: every replica of a shard listens on
// the same one.
func (s *Server) watchPrimaryPod(ctx context.Context, cs kubernetes.Interface, namespace string, self net.Addr) error {
	name := s.cfg.PrimaryPod
	_, port, err := net.SplitHostPort(self.String())
	if err != nil {
		return fmt.Errorf("own listen address %s: %w", self, err)
	}
	factory := namedInformers(cs, namespace, name)
	defer factory.Shutdown()
	on := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok || pod.Name != name {
			return
		}
		url := primaryURLOf(pod, port)
		if url != s.repl.primaryURL() {
			slog.Info("Primary address", "pod", name, "url", url)
			s.repl.setPrimary(url)
		}
	}
	if _, err := factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    on,
		UpdateFunc: func(_, obj any) { on(obj) },
		DeleteFunc: func(any) { s.repl.setPrimary("") },
	}); err != nil {
		return fmt.Errorf("watching pod %s: %w", name, err)
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	return nil
}

// primaryURLOf is the base URL of a primary pod, "" while it has no IP or is going away.
func primaryURLOf(pod *corev1.Pod, port string) string {
	if pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
		return ""
	}
	return "http://" + net.JoinHostPort(pod.Status.PodIP, port)
}
