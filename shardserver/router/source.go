package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/annshard/annshard/shardserver/kube"
	"github.com/annshard/annshard/shardserver/slots"
)

// filePollInterval is how often --routing-file is checked for changes. Polling (rather
// than inotify) also sees the symlink swap kubelet does for a mounted ConfigMap.
const filePollInterval = time.Second

// fileWatcher feeds the router the table in a file, re-reading it when it changes or
// when the router asks (after a `moved` answer).
type fileWatcher struct {
	path string
	r    *Router
	last []byte
	kick chan struct{}
}

// newFileWatcher reads the file once: a router must not start with a table it cannot
// read.
func newFileWatcher(path string, r *Router) (*fileWatcher, error) {
	fw := &fileWatcher{path: path, r: r, kick: make(chan struct{}, 1)}
	if err := fw.load(); err != nil {
		return nil, err
	}
	r.setRefresh(func() {
		select {
		case fw.kick <- struct{}{}:
		default:
		}
	})
	return fw, nil
}

func (fw *fileWatcher) load() error {
	b, err := os.ReadFile(fw.path)
	if err != nil {
		return fmt.Errorf("reading routing file: %w", err)
	}
	if bytes.Equal(b, fw.last) {
		return nil
	}
	t, err := slots.Parse(b)
	if err != nil {
		return fmt.Errorf("routing file %s: %w", fw.path, err)
	}
	fw.last = b
	fw.r.SetTable(t)
	return nil
}

func (fw *fileWatcher) run(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx)
	t := time.NewTicker(filePollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-fw.kick:
		}
		if err := fw.load(); err != nil {
			// Keep routing with the last good table; a half-written file is normal.
			log.Error(err, "Keeping the previous routing table")
		}
	}
}

// TableFromConfigMap extracts the routing table of a routing ConfigMap.
func TableFromConfigMap(cm *corev1.ConfigMap) (slots.Table, error) {
	if cm == nil {
		return slots.Table{}, errors.New("no routing ConfigMap")
	}
	data, ok := cm.Data[slots.ConfigMapKey]
	if !ok {
		return slots.Table{}, fmt.Errorf("ConfigMap %s/%s has no key %q", cm.Namespace, cm.Name, slots.ConfigMapKey)
	}
	t, err := slots.Parse([]byte(data))
	if err != nil {
		return slots.Table{}, fmt.Errorf("ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	return t, nil
}

// kubeWatcher feeds the router from the Kubernetes API: the routing ConfigMap and, when
// pods is set, the shard Pods. Both informers are scoped to the index's namespace and
// filtered server-side, so the router's RBAC needs only get/list/watch there.
type kubeWatcher struct {
	cs        kubernetes.Interface
	namespace string
	index     string
	port      int
	pods      bool
	r         *Router
}

func newKubeWatcher(kubeconfig, namespace, index string, port int, pods bool, r *Router) (*kubeWatcher, error) {
	cs, namespace, err := kube.Client(kubeconfig, namespace)
	if err != nil {
		return nil, err
	}
	return &kubeWatcher{cs: cs, namespace: namespace, index: index, port: port, pods: pods, r: r}, nil
}

func (kw *kubeWatcher) run(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx)
	cmName := slots.ConfigMapName(kw.index)
	cmFactory := informers.NewSharedInformerFactoryWithOptions(kw.cs, 0, informers.WithNamespace(kw.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + cmName }))
	podFactory := informers.NewSharedInformerFactoryWithOptions(kw.cs, 0, informers.WithNamespace(kw.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = PodSelector(kw.index) }))
	defer cmFactory.Shutdown()
	defer podFactory.Shutdown()

	onCM := func(obj any) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok || cm.Name != cmName {
			return
		}
		t, err := TableFromConfigMap(cm)
		if err != nil {
			log.Error(err, "Ignoring routing ConfigMap")
			return
		}
		kw.r.SetTable(t)
	}
	if _, err := cmFactory.Core().V1().ConfigMaps().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onCM,
		UpdateFunc: func(_, obj any) { onCM(obj) },
	}); err != nil {
		return fmt.Errorf("watching ConfigMap %s: %w", cmName, err)
	}
	if kw.pods {
		lister := podFactory.Core().V1().Pods().Lister()
		resync := func(any) {
			pods, err := lister.Pods(kw.namespace).List(labels.Everything())
			if err != nil {
				log.Error(err, "Listing shard pods")
				return
			}
			kw.r.SetEndpoints(EndpointsFromPods(pods, kw.port))
		}
		if _, err := podFactory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    resync,
			UpdateFunc: func(_, obj any) { resync(obj) },
			DeleteFunc: resync,
		}); err != nil {
			return fmt.Errorf("watching shard pods: %w", err)
		}
	}
	cmFactory.Start(ctx.Done())
	podFactory.Start(ctx.Done())
	log.Info("Watching routing", "namespace", kw.namespace, "configMap", cmName, "pods", PodSelector(kw.index))
	<-ctx.Done()
	return nil
}
