package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
)

// metric is the distance the benchmark measures with. Its names and semantics are those
// of the index (shardserver/hnsw): L2 is the squared Euclidean distance, InnerProduct and
// Cosine are 1 - dot, Cosine on vectors normalised to unit length.
type metric uint8

const (
	metricL2 metric = iota
	metricInnerProduct
	metricCosine
)

var metricNames = [...]string{metricL2: "L2", metricInnerProduct: "InnerProduct", metricCosine: "Cosine"}

func (m metric) String() string {
	if int(m) < len(metricNames) {
		return metricNames[m]
	}
	return fmt.Sprintf("metric(%d)", m)
}

// parseMetric accepts the API spellings (L2, InnerProduct, Cosine), in any case.
func parseMetric(s string) (metric, error) {
	for m, name := range metricNames {
		if strings.EqualFold(s, name) {
			return metric(m), nil
		}
	}
	return 0, fmt.Errorf("unknown metric %q (want L2, InnerProduct or Cosine)", s)
}

// distance returns the metric's distance function, which expects both vectors already
// normalised for Cosine (see prepare).
func (m metric) distance() func(a, b []float32) float32 {
	if m == metricL2 {
		return squaredL2
	}
	return oneMinusDot
}

// prepare returns the vectors as the metric compares them: for Cosine a normalised copy
// (zero vectors stay zero), otherwise v itself.
func (m metric) prepare(v *vectors) *vectors {
	if m != metricCosine {
		return v
	}
	out := &vectors{dim: v.dim, data: make([]float32, len(v.data))}
	copy(out.data, v.data)
	for i := range out.Len() {
		row := out.Row(i)
		var n float64
		for _, x := range row {
			n += float64(x) * float64(x)
		}
		if n == 0 {
			continue
		}
		inv := float32(1 / math.Sqrt(n))
		for j := range row {
			row[j] *= inv
		}
	}
	return out
}

// squaredL2 is unrolled by four with independent accumulators so the exact ground truth
// is a reasonably fast scalar scan independent of the index; b must be at least as long as a.
func squaredL2(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		x, y := a[i:i+4:i+4], b[i:i+4:i+4]
		d0, d1, d2, d3 := x[0]-y[0], x[1]-y[1], x[2]-y[2], x[3]-y[3]
		s0 += d0 * d0
		s1 += d1 * d1
		s2 += d2 * d2
		s3 += d3 * d3
	}
	for ; i < len(a); i++ {
		d := a[i] - b[i]
		s0 += d * d
	}
	return (s0 + s1) + (s2 + s3)
}

// oneMinusDot is the inner-product distance, unrolled like squaredL2.
func oneMinusDot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		x, y := a[i:i+4:i+4], b[i:i+4:i+4]
		s0 += x[0] * y[0]
		s1 += x[1] * y[1]
		s2 += x[2] * y[2]
		s3 += x[3] * y[3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return 1 - ((s0 + s1) + (s2 + s3))
}

// neighbour is one entry of an exact top-k list.
type neighbour struct {
	id   int32
	dist float32
}

// less orders by distance, then by id, so that exact results are deterministic even
// when distances tie.
func (a neighbour) less(b neighbour) bool {
	return a.dist < b.dist || (a.dist == b.dist && a.id < b.id)
}

// bruteForce scans the whole base for q and returns its k nearest, nearest first, in
// top (reused; len(top) is reset). base and q must be prepared for the metric.
func bruteForce(top []neighbour, base *vectors, q []float32, k int, dist func(a, b []float32) float32) []neighbour {
	top = top[:0]
	n := base.Len()
	for i := range n {
		top = keepNearest(top, neighbour{id: int32(i), dist: dist(q, base.data[i*base.dim:(i+1)*base.dim])}, k)
	}
	return top
}

// keepNearest adds c to top, the k nearest so far in order, if it is among them.
func keepNearest(top []neighbour, c neighbour, k int) []neighbour {
	if len(top) == k && !c.less(top[k-1]) {
		return top
	}
	// Insertion into a short sorted list: k is small and, after the first few hundred
	// vectors, almost every candidate is rejected by the check above.
	if len(top) < k {
		top = append(top, c)
	} else {
		top[k-1] = c
	}
	for j := len(top) - 1; j > 0 && top[j].less(top[j-1]); j-- {
		top[j], top[j-1] = top[j-1], top[j]
	}
	return top
}

// exactGroundTruth computes the k nearest base vectors of every query by brute force on
// threads goroutines. base and queries must be prepared for the metric.
func exactGroundTruth(ctx context.Context, base, queries *vectors, k int, m metric, threads int) (*groundTruth, error) {
	if k > base.Len() {
		return nil, fmt.Errorf("compute ground truth: k=%d exceeds the %d base vectors", k, base.Len())
	}
	nq := queries.Len()
	gt := &groundTruth{width: k, ids: make([]int32, nq*k)}
	dist := m.distance()
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range max(threads, 1) {
		wg.Go(func() {
			top := make([]neighbour, 0, k)
			for {
				i := int(next.Add(1) - 1)
				if i >= nq || ctx.Err() != nil {
					return
				}
				top = bruteForce(top, base, queries.Row(i), k, dist)
				row := gt.Row(i)
				for j, nb := range top {
					row[j] = nb.id
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("compute ground truth: %w", err)
	}
	return gt, nil
}

// hitsAt returns |found ∩ truth[:k]|: how many of the true k nearest the search
// returned. Recall@k is hits / k; results beyond the true top k earn nothing and
// duplicates in found count once.
func hitsAt(found []uint64, truth []int32, k int) int {
	hits := 0
	for _, t := range truth[:k] {
		for _, f := range found {
			if f == uint64(t) {
				hits++
				break
			}
		}
	}
	return hits
}
