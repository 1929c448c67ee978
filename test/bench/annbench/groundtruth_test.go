package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

// randomVectors draws n uniform vectors in [-1, 1)^dim from a fixed seed.
func randomVectors(seed uint64, n, dim int) *vectors {
	rng := rand.New(rand.NewPCG(seed, 1))
	v := &vectors{dim: dim, data: make([]float32, n*dim)}
	for i := range v.data {
		v.data[i] = rng.Float32()*2 - 1
	}
	return v
}

// naiveDistance is the textbook float64 definition each metric must agree with.
func naiveDistance(m metric, a, b []float32) float64 {
	var s float64
	switch m {
	case metricL2:
		for i := range a {
			d := float64(a[i]) - float64(b[i])
			s += d * d
		}
		return s
	case metricCosine:
		var na, nb float64
		for i := range a {
			s += float64(a[i]) * float64(b[i])
			na += float64(a[i]) * float64(a[i])
			nb += float64(b[i]) * float64(b[i])
		}
		return 1 - s/math.Sqrt(na*nb)
	default:
		for i := range a {
			s += float64(a[i]) * float64(b[i])
		}
		return 1 - s
	}
}

// naiveTopK sorts every base vector by naiveDistance.
func naiveTopK(m metric, base *vectors, q []float32, k int) []int32 {
	ids := make([]int32, base.Len())
	d := make([]float64, base.Len())
	for i := range ids {
		ids[i] = int32(i)
		d[i] = naiveDistance(m, q, base.Row(i))
	}
	sort.SliceStable(ids, func(a, b int) bool { return d[ids[a]] < d[ids[b]] })
	return ids[:k]
}

var allMetrics = []metric{metricL2, metricInnerProduct, metricCosine}

func TestDistanceKernels(t *testing.T) {
	for _, dim := range []int{1, 3, 4, 7, 16, 33, 128} {
		v := randomVectors(uint64(dim), 2, dim)
		a, b := v.Row(0), v.Row(1)
		for _, m := range allMetrics {
			t.Run(fmt.Sprintf("%v/dim=%d", m, dim), func(t *testing.T) {
				pv := m.prepare(v)
				got := float64(m.distance()(pv.Row(0), pv.Row(1)))
				want := naiveDistance(m, a, b)
				if math.Abs(got-want) > 1e-5*math.Max(1, math.Abs(want)) {
					t.Fatalf("dim %d: got %v, want %v", dim, got, want)
				}
			})
		}
	}
}

func TestPrepareCosine(t *testing.T) {
	v := &vectors{dim: 2, data: []float32{3, 4, 0, 0, -2, 0}}
	p := metricCosine.prepare(v)
	if want := []float32{0.6, 0.8, 0, 0, -1, 0}; !slices.Equal(p.data, want) {
		t.Fatalf("got %v, want %v", p.data, want)
	}
	if v.data[0] != 3 {
		t.Fatal("prepare changed its input")
	}
	if metricL2.prepare(v) != v || metricInnerProduct.prepare(v) != v {
		t.Fatal("L2 and InnerProduct must compare the vectors as given")
	}
}

func TestBruteForceMatchesNaive(t *testing.T) {
	base := randomVectors(1, 300, 13)
	queries := randomVectors(2, 20, 13)
	for _, m := range allMetrics {
		for _, k := range []int{1, 10, 300} {
			t.Run(fmt.Sprintf("%v/k=%d", m, k), func(t *testing.T) {
				pb, pq := m.prepare(base), m.prepare(queries)
				for threads := 1; threads <= 3; threads += 2 {
					gt, err := exactGroundTruth(context.Background(), pb, pq, k, m, threads)
					if err != nil {
						t.Fatal(err)
					}
					for i := range queries.Len() {
						q := queries.Row(i)
						want, got := naiveTopK(m, base, q, k), gt.Row(i)
						for j := range want {
							// float32 sums may order two near-equal distances differently
							// from float64 ones; any other difference is a bug.
							dg, dw := naiveDistance(m, q, base.Row(int(got[j]))), naiveDistance(m, q, base.Row(int(want[j])))
							if got[j] != want[j] && math.Abs(dg-dw) > 1e-5 {
								t.Fatalf("threads=%d query %d rank %d: got id %d (%v), want %d (%v)", threads, i, j, got[j], dg, want[j], dw)
							}
						}
					}
				}
			})
		}
	}
}

func TestBruteForceTiesByID(t *testing.T) {
	base := &vectors{dim: 1, data: []float32{5, 1, 3, 1, 1}}
	got := bruteForce(nil, base, []float32{1}, 3, squaredL2)
	if want := []neighbour{{1, 0}, {3, 0}, {4, 0}}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestExactGroundTruthErrors(t *testing.T) {
	base := randomVectors(1, 5, 4)
	t.Run("k above n", func(t *testing.T) {
		if _, err := exactGroundTruth(context.Background(), base, base, 6, metricL2, 2); err == nil {
			t.Fatal("want an error for k > n")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := exactGroundTruth(ctx, base, base, 2, metricL2, 2); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

func TestHitsAt(t *testing.T) {
	truth := []int32{4, 8, 15, 16, 23, 42}
	cases := []struct {
		name  string
		found []uint64
		k     int
		want  int
	}{
		{"all found, any order", []uint64{16, 4, 15, 8}, 4, 4},
		{"half", []uint64{4, 8, 99, 100}, 4, 2},
		{"beyond k does not count", []uint64{23, 42, 4}, 3, 1},
		{"short result counts as misses", []uint64{4}, 4, 1},
		{"duplicates count once", []uint64{4, 4, 4, 4}, 4, 1},
		{"none", nil, 2, 0},
		{"k=1", []uint64{4, 8}, 1, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := hitsAt(tc.found, truth, tc.k); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseMetric(t *testing.T) {
	cases := []struct {
		in   string
		want metric
		ok   bool
	}{
		{"L2", metricL2, true}, {"l2", metricL2, true}, {"InnerProduct", metricInnerProduct, true},
		{"innerproduct", metricInnerProduct, true}, {"COSINE", metricCosine, true},
		{"", 0, false}, {"dot", 0, false}, {"L1", 0, false}, {"Cosine ", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseMetric(tc.in)
			if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
				t.Fatalf("got %v, %v; want %v, ok=%v", got, err, tc.want, tc.ok)
			}
		})
	}
}
