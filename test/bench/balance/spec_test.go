package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestShardSpecProxiesWhatTheScenarioSlows checks that a router reaches through a proxy
// every replica its scenario slows (else the slowing would not apply) and no other
// replica unless -proxy-all (else every policy would pay the proxy hop).
func TestShardSpecProxiesWhatTheScenarioSlows(t *testing.T) {
	b := &bench{o: options{shift: time.Second}}
	for k := range numShards {
		for r := range numReplicas {
			px, err := newProxy("http://127.0.0.1:1")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(px.close)
			b.proxies[k][r] = px
			b.direct[k][r] = fmt.Sprintf("http://127.0.0.2:%d", 1000+10*k+r)
		}
	}
	for _, sc := range []string{"healthy", "slow5x", "slow10x", "shifting", "slowlink"} {
		for _, all := range []bool{false, true} {
			b.o.proxyAll = all
			undo, err := b.scenario(sc, time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(30 * time.Millisecond) // shifting sets its delays on a ticker
			spec := b.shardSpec(sc)
			parts := strings.Split(spec, ";")
			if len(parts) != numShards {
				t.Fatalf("%s: spec %q has %d shards", sc, spec, len(parts))
			}
			for k, part := range parts {
				urls := strings.Split(strings.TrimPrefix(part, fmt.Sprintf("%d=", k)), ",")
				if len(urls) != numReplicas {
					t.Fatalf("%s: shard %d has %d replicas: %q", sc, k, len(urls), part)
				}
				for r, u := range urls {
					px := b.proxies[k][r]
					slowed := px.delay.Load() > 0 || px.link.Load() != nil
					proxied := u == px.url()
					if !proxied && u != b.direct[k][r] {
						t.Fatalf("%s: shard %d replica %d is %q", sc, k, r, u)
					}
					if slowed && !proxied {
						t.Errorf("%s (proxy-all %v): shard %d replica %d is slowed but routed around its proxy", sc, all, k, r)
					}
					if proxied != (all || slowable(sc, k, r)) {
						t.Errorf("%s (proxy-all %v): shard %d replica %d proxied = %v", sc, all, k, r, proxied)
					}
				}
			}
			if sc == "healthy" && !all && strings.Contains(spec, "127.0.0.1") {
				t.Errorf("healthy spec %q goes through a proxy", spec)
			}
			undo()
		}
	}
}
