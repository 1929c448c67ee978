package router

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/annshard/annshard/shardserver/slots"
)

// TestKubeWatcher runs the informers against a fake API server: the routing ConfigMap
// and shard Pods of the index feed the router, other objects do not, and updates
// (a new table, a Pod turning ready) reach the view.
func TestKubeWatcher(t *testing.T) {
	tab := slots.Even(2)
	tab.Epoch = 3
	raw, err := tab.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "idx-routing", Namespace: "ns"}, Data: map[string]string{slots.ConfigMapKey: string(raw)}}
	otherCM := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "other-routing", Namespace: "ns"}, Data: map[string]string{slots.ConfigMapKey: `{"hash":"xxh64","epoch":99,"shards":1,"ranges":[{"from":0,"to":4095,"shard":0}]}`}}
	p0 := pod("idx-shard-0-0", "0", "127.0.1.1", true)
	p1 := pod("idx-shard-1-0", "1", "127.0.2.1", false)
	p0.Namespace, p1.Namespace = "ns", "ns"
	stranger := pod("other-shard-0-0", "0", "127.0.9.1", true)
	stranger.Namespace = "ns"
	stranger.Labels[LabelInstance] = "other"
	elsewhere := pod("idx-shard-0-1", "0", "127.0.8.1", true)
	elsewhere.Namespace = "ns2"
	cs := fake.NewClientset(cm, otherCM, p0, p1, stranger, elsewhere)

	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	kw := &kubeWatcher{cs: cs, namespace: "ns", index: "idx", port: 8080, pods: true, r: r}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- kw.run(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, ok func(v *view) bool) {
		t.Helper()
		if !r.awaitView(ctx, 10*time.Second, ok) {
			v := r.view.Load()
			t.Fatalf("timed out waiting for %s; epoch %d, shards %d", what, v.epoch(), len(v.shards))
		}
	}
	waitFor("the table and shard 0's pod", func(v *view) bool {
		s0 := v.shard(0)
		return v.epoch() == 3 && s0 != nil && len(s0.replicas) == 1 && s0.replicas[0].ep.URL == "http://127.0.1.1:8080"
	})
	if s1 := r.view.Load().shard(1); s1 != nil && len(s1.replicas) != 0 {
		t.Fatalf("unready pod routed: %+v", s1.replicas[0].ep)
	}
	if err := r.Ready(); err == nil {
		t.Fatal("ready while shard 1 has no ready replica")
	}

	// Shard 1's primary turns ready; the operator publishes a new table.
	p1.Status.Conditions[1].Status = corev1.ConditionTrue
	if _, err := cs.CoreV1().Pods("ns").UpdateStatus(ctx, p1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	tab.Move(slots.Range(0, 99), 1)
	raw, _ = tab.MarshalJSON()
	cm.Data[slots.ConfigMapKey] = string(raw)
	if _, err := cs.CoreV1().ConfigMaps("ns").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("shard 1's pod and epoch 4", func(v *view) bool {
		s1 := v.shard(1)
		return v.epoch() == 4 && s1 != nil && s1.primary != nil && s1.primary.ep.Name == "idx-shard-1-0"
	})
	if got := r.view.Load().table.ShardOf(50); got != 1 {
		t.Fatalf("slot 50 on shard %d after the move, want 1", got)
	}
	if err := r.Ready(); err != nil {
		t.Fatalf("not ready with every shard served: %v", err)
	}

	// A bad table is ignored: routing keeps the last good one.
	cm.Data[slots.ConfigMapKey] = `{"epoch":5}`
	if _, err := cs.CoreV1().ConfigMaps("ns").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Deleting a pod removes it.
	if err := cs.CoreV1().Pods("ns").Delete(ctx, p0.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("shard 0's pod to go", func(v *view) bool { s0 := v.shard(0); return s0 == nil || len(s0.replicas) == 0 })
	if got := r.view.Load().epoch(); got != 4 {
		t.Fatalf("epoch %d after a bad table, want 4 kept", got)
	}
}
