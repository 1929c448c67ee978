package router

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/annshard/annshard/shardserver/balance"
	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

func TestParseStaticShards(t *testing.T) {
	for _, tc := range []struct {
		spec    string
		want    string
		wantErr bool
	}{
		{"0=http://a:1,http://b:2;1=http://c:3", "map[0:[{http://a:1 0 a:1 false} {http://b:2 1 b:2 false}] 1:[{http://c:3 0 c:3 false}]]", false},
		{" 0 = http://a:1/ ; ", "map[0:[{http://a:1 0 a:1 false}]]", false},
		{"", "", true},
		{"0=http://a;2=http://c", "", true},  // gap
		{"0=http://a;0=http://b", "", true},  // twice
		{"0=ftp://a", "", true},              // scheme
		{"zero=http://a", "", true},          // number
		{"0http://a", "", true},              // no '='
		{"0=http://a,", "", true},            // empty URL
		{"-1=http://a;0=http://b", "", true}, // negative
		{"0=http://[::1]:80", "map[0:[{http://[::1]:80 0 [::1]:80 false}]]", false},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParseStaticShards(tc.spec)
			if tc.wantErr {
				if !errors.Is(err, ErrBadShards) {
					t.Fatalf("err %v, want ErrBadShards", err)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func pod(name, shard, ip string, ready bool, mods ...func(*corev1.Pod)) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			LabelInstance: "idx", LabelComponent: ComponentShard, LabelShard: shard,
		}},
		Status: corev1.PodStatus{PodIP: ip, Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
			{Type: corev1.PodReady, Status: status},
		}},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

func TestEndpointsFromPods(t *testing.T) {
	deleting := func(p *corev1.Pod) { now := metav1.NewTime(time.Unix(1, 0)); p.DeletionTimestamp = &now }
	for _, tc := range []struct {
		name string
		pods []*corev1.Pod
		want string
	}{
		{"sorted by ordinal, primary first", []*corev1.Pod{
			pod("idx-shard-0-2", "0", "127.0.1.3", true),
			pod("idx-shard-0-0", "0", "127.0.1.1", true),
			pod("idx-shard-1-0", "1", "127.0.2.1", true),
			pod("idx-shard-0-1", "0", "127.0.1.2", true),
		}, "map[0:[{http://127.0.1.1:8080 0 idx-shard-0-0 false} {http://127.0.1.2:8080 1 idx-shard-0-1 false} {http://127.0.1.3:8080 2 idx-shard-0-2 false}] 1:[{http://127.0.2.1:8080 0 idx-shard-1-0 false}]]"},
		{"not ready, no IP, deleting, bad labels or names are skipped", []*corev1.Pod{
			pod("idx-shard-0-0", "0", "127.0.1.1", false),
			pod("idx-shard-0-1", "0", "", true),
			pod("idx-shard-0-2", "0", "127.0.1.3", true, deleting),
			pod("idx-shard-0-3", "x", "127.0.1.4", true),
			pod("idx-shard-0-x", "0", "127.0.1.5", true),
			pod("idx-shard-0-4", "0", "127.0.1.6", true, func(p *corev1.Pod) { p.Status.Conditions = nil }),
			pod("idx-shard-0-5", "0", "127.0.1.7", true),
			nil,
		}, "map[0:[{http://127.0.1.7:8080 5 idx-shard-0-5 false}]]"},
		{"IPv6", []*corev1.Pod{pod("a-0", "0", "fd00::1", true)}, "map[0:[{http://[fd00::1]:8080 0 a-0 false}]]"},
		{"container port named http wins", []*corev1.Pod{pod("a-0", "0", "127.0.0.9", true, func(p *corev1.Pod) {
			p.Spec.Containers = []corev1.Container{{Name: "shard", Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090}, {Name: "http", ContainerPort: 18080}}}}
		})}, "map[0:[{http://127.0.0.9:18080 0 a-0 false}]]"},
		{"a drain-marked pod is kept, marked", []*corev1.Pod{
			pod("a-0", "0", "127.0.0.9", true),
			pod("a-1", "0", "127.0.0.10", true, func(p *corev1.Pod) { p.Annotations = map[string]string{client.DrainAnnotation: "true"} }),
			pod("a-2", "0", "127.0.0.11", true, func(p *corev1.Pod) { p.Annotations = map[string]string{client.DrainAnnotation: "false"} }),
		}, "map[0:[{http://127.0.0.9:8080 0 a-0 false} {http://127.0.0.10:8080 1 a-1 true} {http://127.0.0.11:8080 2 a-2 false}]]"},
		{"none", nil, "map[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fmt.Sprint(EndpointsFromPods(tc.pods, 8080)); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	if got := PodSelector("idx"); got != "app.kubernetes.io/instance=idx,app.kubernetes.io/component=shard" {
		t.Fatalf("PodSelector = %s", got)
	}
}

func TestTableFromConfigMap(t *testing.T) {
	good, err := slots.Even(3).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cm      *corev1.ConfigMap
		wantErr bool
	}{
		{"good", &corev1.ConfigMap{Data: map[string]string{slots.ConfigMapKey: string(good)}}, false},
		{"missing key", &corev1.ConfigMap{Data: map[string]string{"other": string(good)}}, true},
		{"bad table", &corev1.ConfigMap{Data: map[string]string{slots.ConfigMapKey: `{"hash":"xxh64","epoch":1,"shards":2,"ranges":[]}`}}, true},
		{"nil", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := TableFromConfigMap(tc.cm)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && (tab.Shards != 3 || tab.Epoch != 1) {
				t.Fatalf("table %d shards epoch %d", tab.Shards, tab.Epoch)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(o Options) error
		wantErr bool
	}{
		{"static", []string{"--shards", "0=http://127.0.0.1:1", "--policy", "roundrobin", "--hedge-percentile", "95", "--timeout", "2s"}, nil,
			func(o Options) error {
				if o.Policy != balance.RoundRobin || o.HedgePercentile != 95 || o.Timeout != 2*time.Second || o.CacheEntries != 10000 {
					return fmt.Errorf("%+v", o)
				}
				return nil
			}, false},
		{"kubernetes with env", []string{"--index", "products"}, map[string]string{"POD_NAMESPACE": "ns1", "ANNSHARD_TOKEN": " tok\n"},
			func(o Options) error {
				if o.Namespace != "ns1" || o.Token != "tok" || o.Index != "products" {
					return fmt.Errorf("%+v", o)
				}
				return nil
			}, false},
		{"no source", nil, nil, nil, true},
		{"bad policy", []string{"--shards", "0=http://a", "--policy", "Fastest"}, nil, nil, true},
		{"hedge 100", []string{"--shards", "0=http://a", "--hedge-percentile", "100"}, nil, nil, true},
		{"index and file", []string{"--index", "a", "--routing-file", "/x"}, nil, nil, true},
		{"missing token file", []string{"--shards", "0=http://a", "--token-file", "/nonexistent/token"}, nil, nil, true},
		{"stray argument", []string{"--shards", "0=http://a", "extra"}, nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseFlags(tc.args, env(tc.env), io.Discard)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tc.wantErr)
			}
			if tc.check != nil {
				if err := tc.check(o); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	if _, err := ParseFlags([]string{"-h"}, env(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v, want flag.ErrHelp", err)
	}
}
