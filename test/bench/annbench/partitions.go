package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// partitionShares are the shares of the base that -partitions confines searches to:
// from a tenant of a few dozen vectors to half of the data.
var partitionShares = []float64{0.001, 0.01, 0.1, 0.5}

// partitionQueries bounds the queries of the -partitions measurements (each share has
// its own exact ground truth).
const partitionQueries = 200

// partition is a subset of the base: its keys, and membership by key.
type partition struct {
	keys   []uint64
	member []bool
}

// plans the -partitions measurement compares: the index's own choice, and each plan
// forced.
const (
	planAuto = "auto"
	planScan = "scan"
	planWalk = "walk"
)

// subsetSearcher is a searcher that can confine a search to a partition and say which
// plan answered it.
type subsetSearcher interface {
	SearchSubset(keys []uint64, q []float32, k, ef int, p *partition, plan string) ([]uint64, string, error)
}

// partitionReport is one row of -partitions: a share, an ef, an index.
type partitionReport struct {
	Quant      string  `json:"quant"`
	Share      float64 `json:"share"`
	Keys       int     `json:"keys"`
	Ef         int     `json:"ef"`
	Scanned    float64 `json:"scanned"` // share of queries the planner answered by an exact scan
	Recall     float64 `json:"recall"`
	QPS1       float64 `json:"qps1"`
	QPS1CPU    float64 `json:"qps1Cpu"`
	ScanQPS1   float64 `json:"scanQps1"`
	ScanQPSCPU float64 `json:"scanQps1Cpu"`
	WalkRecall float64 `json:"walkRecall"`
	WalkQPS1   float64 `json:"walkQps1"`
	WalkQPSCPU float64 `json:"walkQps1Cpu"`
}

// makePartition draws the keys of a share of n, seeded so that runs compare.
func makePartition(n int, share float64) *partition {
	rng := rand.New(rand.NewPCG(7, 11))
	p := &partition{member: make([]bool, n)}
	for i := range n {
		if rng.Float64() < share {
			p.member[i] = true
			p.keys = append(p.keys, uint64(i))
		}
	}
	return p
}

// measurePartitions runs every share at every ef on idx: recall against the exact
// neighbours within the partition, and single-thread QPS of the planned search, of an
// exact scan of the partition and of the filtered walk.
// pbase and pqueries are prepared for the metric (the ground truth); queries go to the
// index as given.
func measurePartitions(ctx context.Context, c *config, idx annIndex, v variant, pbase, queries, pqueries *vectors, rep reporter) error {
	ss, ok := idx.NewSearcher().(subsetSearcher)
	if !ok {
		return fmt.Errorf("-partitions: the %s index cannot search a partition", v)
	}
	dist, err := hnswDistance(c.metric)
	if err != nil {
		return err
	}
	nq := min(queries.Len(), partitionQueries)
	for _, share := range partitionShares {
		p := makePartition(pbase.Len(), share)
		if len(p.keys) < c.k {
			continue // too small a base for this share
		}
		truth := make([][]int32, nq)
		top := make([]neighbour, 0, c.k)
		for i := range nq {
			top = bruteForceIn(top, pbase, p, pqueries.Row(i), c.k, dist)
			for _, nb := range top {
				truth[i] = append(truth[i], nb.id)
			}
		}
		for _, ef := range c.efs {
			r := partitionReport{Quant: v.quant, Share: share, Keys: len(p.keys), Ef: ef}
			run := func(plan string) (recall, qps, qpsCPU, scanned float64, err error) {
				keys := make([]uint64, 0, c.k)
				hits, scans := 0, 0
				for i := range nq {
					var used string
					if keys, used, err = ss.SearchSubset(keys, queries.Row(i), c.k, ef, p, plan); err != nil {
						return 0, 0, 0, 0, fmt.Errorf("partition search, share %v, query %d: %w", share, i, err)
					}
					if used == planScan {
						scans++
					}
					hits += hitsAt(keys, truth[i], c.k)
				}
				done := 0
				cpu0 := cpuTime()
				start := time.Now()
				for done == 0 || time.Since(start) < c.minMeasure {
					if err := ctx.Err(); err != nil {
						return 0, 0, 0, 0, err
					}
					for i := range nq {
						if keys, _, err = ss.SearchSubset(keys, queries.Row(i), c.k, ef, p, plan); err != nil {
							return 0, 0, 0, 0, err
						}
					}
					done += nq
				}
				qps = float64(done) / time.Since(start).Seconds()
				if cpu := cpuTime() - cpu0; cpu > 0 {
					qpsCPU = float64(done) / cpu.Seconds()
				}
				return float64(hits) / float64(nq*c.k), qps, qpsCPU, float64(scans) / float64(nq), nil
			}
			if r.Recall, r.QPS1, r.QPS1CPU, r.Scanned, err = run(planAuto); err != nil {
				return err
			}
			if _, r.ScanQPS1, r.ScanQPSCPU, _, err = run(planScan); err != nil {
				return err
			}
			if r.WalkRecall, r.WalkQPS1, r.WalkQPSCPU, _, err = run(planWalk); err != nil {
				return err
			}
			if err := rep.partition(r, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// bruteForceIn is bruteForce over the members of p only.
func bruteForceIn(top []neighbour, base *vectors, p *partition, q []float32, k int, dist func(a, b []float32) float32) []neighbour {
	top = top[:0]
	for _, key := range p.keys {
		i := int(key)
		top = keepNearest(top, neighbour{id: int32(i), dist: dist(q, base.data[i*base.dim:(i+1)*base.dim])}, k)
	}
	return top
}
