package hnsw

import "testing"

// TestRecall is the acceptance test: recall@10 >= 0.95 against brute force
// on a generated 20k x 64 set at M=16, ef=64.
func TestRecall(t *testing.T) {
	n := 20000
	if raceEnabled || testing.Short() {
		n = 2000
	}
	data := clustered(1, n, 64, 50)
	queries := clustered(2, 200, 64, 50)
	x := build(t, Config{Dim: 64, M: 16, EfConstruction: 200}, data)
	r := recallAt(t, x, data, queries, nil, 10, 64)
	t.Logf("recall@10 = %.4f (n=%d)", r, n)
	if r < 0.95 {
		t.Fatalf("recall@10 = %.4f, want >= 0.95", r)
	}
}

func TestRecallPerMetric(t *testing.T) {
	for _, m := range []Metric{L2, InnerProduct, Cosine} {
		t.Run(m.String(), func(t *testing.T) {
			n := 5000
			if raceEnabled {
				n = 1000
			}
			data := clustered(3, n, 32, 20)
			queries := clustered(4, 100, 32, 20)
			x := build(t, Config{Dim: 32, Metric: m}, data)
			r := recallAt(t, x, data, queries, nil, 10, 64)
			t.Logf("%s recall@10 = %.4f", m, r)
			if r < 0.95 {
				t.Fatalf("%s recall@10 = %.4f, want >= 0.95", m, r)
			}
		})
	}
}
