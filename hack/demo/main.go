// Command demo is the data half of `make run`: it waits for an AnnIndex to become
// Available (printing progress), loads a generated dataset through the index's router,
// runs queries and prints their results next to an exact search, with recall@k.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/test/e2e/framework"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the cluster (default $KUBECONFIG)")
	namespace := fs.String("namespace", "default", "namespace of the index")
	index := fs.String("index", "", "name of the AnnIndex (required)")
	n := fs.Int("n", 5000, "vectors to load")
	nq := fs.Int("queries", 200, "queries to run")
	k := fs.Int("k", 10, "neighbours per query")
	partitions := fs.Int("partitions", 8, "spread the vectors over this many partitions (0: none)")
	wait := fs.Duration("wait", 5*time.Minute, "how long to wait for the index to become Available")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *index == "" {
		return fmt.Errorf("-index is required")
	}
	c, err := framework.Connect(*kubeconfig)
	if err != nil {
		return err
	}

	start := time.Now()
	fmt.Printf("waiting for AnnIndex %s/%s to become Available\n", *namespace, *index)
	idx, err := c.WaitAvailable(ctx, types.NamespacedName{Namespace: *namespace, Name: *index}, *wait, func(s string) {
		fmt.Printf("  %5.1fs  %s\n", time.Since(start).Seconds(), s)
	})
	if err != nil {
		return err
	}
	fmt.Printf("Available after %.1fs: %d shards, %d ready\n\n", time.Since(start).Seconds(), idx.Spec.Shards, idx.Status.ReadyShards)

	routers, err := c.Router(ctx, *namespace, *index)
	if err != nil {
		return err
	}
	dim := int(idx.Spec.Dimension)
	data := framework.Generate(*n, *nq, dim, 32, *partitions, 1)
	t := time.Now()
	loaded, err := data.Load(ctx, routers, 500)
	if err != nil {
		return err
	}
	fmt.Printf("loaded %d vectors of dimension %d through the router in %.2fs (%.0f vectors/s)\n",
		loaded, dim, time.Since(t).Seconds(), float64(loaded)/time.Since(t).Seconds())

	var sum float64
	var lat []time.Duration
	for i, q := range data.Queries {
		var resp *client.SearchResponse
		qt := time.Now()
		err := routers.Do(ctx, func(cl *client.Client) (err error) {
			resp, err = cl.Search(ctx, &client.SearchRequest{Vector: q, K: *k})
			return err
		})
		if err != nil {
			return fmt.Errorf("query %d: %w", i, err)
		}
		lat = append(lat, time.Since(qt))
		want := data.Exact(q, *k, "")
		r := framework.Recall(resp.Results, want)
		sum += r
		if i < 3 {
			fmt.Printf("\nquery %d: recall@%d %.2f\n  %-4s %-10s %-12s %s\n", i, *k, r, "rank", "id", "distance", "exact")
			for j, h := range resp.Results {
				ex := ""
				if j < len(want) {
					ex = want[j]
				}
				fmt.Printf("  %-4d %-10s %-12.4f %s\n", j+1, h.ID, h.Distance, ex)
			}
		}
	}
	p50, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
	fmt.Printf("\n%d queries: mean recall@%d %.4f against exact search; latency p50 %s, p99 %s\n",
		len(data.Queries), *k, sum/float64(len(data.Queries)), p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond))

	if *partitions > 0 {
		var resp *client.SearchResponse
		err := routers.Do(ctx, func(cl *client.Client) (err error) {
			resp, err = cl.Search(ctx, &client.SearchRequest{Vector: data.Queries[0], K: 3, Partition: "p1"})
			return err
		})
		if err != nil {
			return fmt.Errorf("partition query: %w", err)
		}
		var ids []string
		for _, h := range resp.Results {
			ids = append(ids, h.ID+"@"+h.Partition)
		}
		fmt.Printf("partition-scoped query (partition p1, one shard only): %s\n", strings.Join(ids, " "))
	}
	return nil
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}
