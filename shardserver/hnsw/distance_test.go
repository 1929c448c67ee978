package hnsw

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// TestKernelsMatchScalar proves every SIMD kernel equals the scalar one (within
// float tolerance) on every length 0..600, with slices starting at odd offsets so the
// loads are unaligned and every tail length is exercised.
func TestKernelsMatchScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]float32, 2*610)
	for i := range buf {
		buf[i] = float32(rng.NormFloat64())
	}
	type kernel struct {
		name    string
		ok      bool
		f, want func(a, b []float32) float32
	}
	kernels := []kernel{
		{"l2AVX2", useAVX2, l2AVX2, l2Scalar},
		{"dotAVX2", useAVX2, dotAVX2, dotScalar},
		{"l2AVX512", useAVX512, l2AVX512, l2Scalar},
		{"dotAVX512", useAVX512, dotAVX512, dotScalar},
		{"l2PfAVX2", useAVX2, func(a, b []float32) float32 { return l2PfAVX2(a, b, unsafe.SliceData(b)) }, l2Scalar},
		{"dotPfAVX2", useAVX2, func(a, b []float32) float32 { return dotPfAVX2(a, b, unsafe.SliceData(a)) }, dotScalar},
		{"l2PfAVX512", useAVX512, func(a, b []float32) float32 { return l2PfAVX512(a, b, unsafe.SliceData(b)) }, l2Scalar},
		{"dotPfAVX512", useAVX512, func(a, b []float32) float32 { return dotPfAVX512(a, b, unsafe.SliceData(a)) }, dotScalar},
		{"l2", true, l2, l2Scalar},
		{"dot", true, dot, dotScalar},
	}
	for _, k := range kernels {
		t.Run(k.name, func(t *testing.T) {
			if !k.ok {
				t.Skipf("%s not supported on this CPU", k.name)
			}
			for n := 0; n <= 600; n++ {
				off := n % 7
				a := buf[off : off+n]
				b := buf[610+3 : 610+3+n]
				got, want := k.f(a, b), k.want(a, b)
				// Summation order differs; bound the error by the sum of magnitudes.
				var mag float64
				for i := range a {
					mag += math.Abs(float64(a[i]) * float64(b[i]))
					mag += float64((a[i] - b[i]) * (a[i] - b[i]))
				}
				if diff := math.Abs(float64(got - want)); diff > 1e-5*mag+1e-6 {
					t.Fatalf("n=%d: %s=%g scalar=%g", n, k.name, got, want)
				}
			}
		})
	}
}

// TestKernelsExact checks the kernels against a float64 reference on small integer
// vectors, where every kernel must be exact.
func TestKernelsExact(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 128, 784} {
		a := make([]float32, n)
		b := make([]float32, n)
		var wantL2, wantDot float64
		for i := range a {
			a[i] = float32(i%5) - 2
			b[i] = float32(i%3) - 1
			wantL2 += float64((a[i] - b[i]) * (a[i] - b[i]))
			wantDot += float64(a[i] * b[i])
		}
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			for _, f := range []struct {
				name string
				ok   bool
				got  float32
				want float64
			}{
				{"l2", true, l2(a, b), wantL2},
				{"dot", true, dot(a, b), wantDot},
				{"l2Scalar", true, l2Scalar(a, b), wantL2},
				{"dotScalar", true, dotScalar(a, b), wantDot},
				{"l2AVX2", useAVX2, l2AVX2(a, b), wantL2},
				{"dotAVX2", useAVX2, dotAVX2(a, b), wantDot},
			} {
				if f.ok && float64(f.got) != f.want {
					t.Errorf("%s = %g, want %g", f.name, f.got, f.want)
				}
			}
		})
	}
}

// BenchmarkKernel compares the kernels on the same data in one run, so the SIMD vs
// scalar speed ratio can be read off one output.
func BenchmarkKernel(b *testing.B) {
	for _, dim := range []int{64, 128, 784, 960} {
		rng := rand.New(rand.NewPCG(3, 4))
		x := make([]float32, dim)
		y := make([]float32, dim)
		for i := range x {
			x[i], y[i] = rng.Float32(), rng.Float32()
		}
		for _, k := range []struct {
			name string
			ok   bool
			f    func(a, b []float32) float32
		}{
			{"l2Scalar", true, l2Scalar},
			{"l2AVX2", useAVX2, l2AVX2},
			{"l2AVX512", useAVX512, l2AVX512},
			{"dotScalar", true, dotScalar},
			{"dotAVX2", useAVX2, dotAVX2},
			{"dotAVX512", useAVX512, dotAVX512},
		} {
			if !k.ok {
				continue
			}
			b.Run(fmt.Sprintf("%s/dim=%d", k.name, dim), func(b *testing.B) {
				b.SetBytes(int64(8 * dim))
				var s float32
				for b.Loop() {
					s += k.f(x, y)
				}
				sink = s
			})
		}
	}
}

var sink float32

// TestPrefetchSameResults: the prefetching kernels change timing, never results.
func TestPrefetchSameResults(t *testing.T) {
	data := clustered(31, 2000, 48, 8)
	x := build(t, Config{Dim: 48}, data)
	defer func(v bool) { usePrefetch = v }(usePrefetch)
	for _, q := range clustered(32, 20, 48, 8) {
		usePrefetch = false
		a, err1 := x.Search(q, 10, SearchOptions{Ef: 40})
		usePrefetch = useAVX2
		b, err2 := x.Search(q, 10, SearchOptions{Ef: 40})
		if err1 != nil || err2 != nil || len(a) != len(b) {
			t.Fatal(err1, err2, len(a), len(b))
		}
		for i := range a {
			if a[i].Key != b[i].Key || math.Abs(float64(a[i].Distance-b[i].Distance)) > 1e-4 {
				t.Fatalf("result %d: %v without prefetch, %v with", i, a[i], b[i])
			}
		}
	}
}

func TestDistanceFunc(t *testing.T) {
	a, b := []float32{1, 2, 3, 4, 5}, []float32{2, 2, 1, 0, 5}
	tests := []struct {
		m    Metric
		want float32
	}{
		{L2, 1 + 0 + 4 + 16 + 0},
		{InnerProduct, 1 - (2 + 4 + 3 + 0 + 25)},
		{Cosine, 1 - (2 + 4 + 3 + 0 + 25)},
	}
	for _, tt := range tests {
		t.Run(tt.m.String(), func(t *testing.T) {
			f := DistanceFunc(tt.m)
			if got := f(a, b); got != tt.want {
				t.Fatalf("distance = %v, want %v", got, tt.want)
			}
			if got := f(a, b[:4]); !math.IsNaN(float64(got)) {
				t.Fatalf("lengths 5 and 4 gave %v, want NaN", got)
			}
		})
	}
}
