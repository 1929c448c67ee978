package hnsw

import "math"

// The distance kernels. l2 and dot are the only two the hot loops call; each is a
// small wrapper the compiler inlines, which branches on a bool fixed at init and then
// makes a direct call into the assembly kernel (or the scalar one). Direct calls
// guarded by a predictable bool are cheaper than calls through a func variable,
// which can neither be inlined nor devirtualised.

// l2 returns the squared Euclidean distance between a and b. len(b) must be >= len(a).
func l2(a, b []float32) float32 {
	if useAVX512 {
		return l2AVX512(a, b)
	}
	if useAVX2 {
		return l2AVX2(a, b)
	}
	return l2Scalar(a, b)
}

// dot returns the inner product of a and b. len(b) must be >= len(a).
func dot(a, b []float32) float32 {
	if useAVX512 {
		return dotAVX512(a, b)
	}
	if useAVX2 {
		return dotAVX2(a, b)
	}
	return dotScalar(a, b)
}

// l2Scalar is the portable kernel: unrolled by 8 into four accumulators so the
// additions do not form one long dependency chain; re-slicing b to len(a) lets the
// compiler drop the bounds checks inside the loop.
func l2Scalar(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		aa := a[i : i+8 : i+8]
		bb := b[i : i+8 : i+8]
		d0 := aa[0] - bb[0]
		d1 := aa[1] - bb[1]
		d2 := aa[2] - bb[2]
		d3 := aa[3] - bb[3]
		d4 := aa[4] - bb[4]
		d5 := aa[5] - bb[5]
		d6 := aa[6] - bb[6]
		d7 := aa[7] - bb[7]
		s0 += d0*d0 + d4*d4
		s1 += d1*d1 + d5*d5
		s2 += d2*d2 + d6*d6
		s3 += d3*d3 + d7*d7
	}
	for ; i < len(a); i++ {
		d := a[i] - b[i]
		s0 += d * d
	}
	return (s0 + s1) + (s2 + s3)
}

// dotScalar is the portable inner-product kernel, shaped like l2Scalar.
func dotScalar(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		aa := a[i : i+8 : i+8]
		bb := b[i : i+8 : i+8]
		s0 += aa[0]*bb[0] + aa[4]*bb[4]
		s1 += aa[1]*bb[1] + aa[5]*bb[5]
		s2 += aa[2]*bb[2] + aa[6]*bb[6]
		s3 += aa[3]*bb[3] + aa[7]*bb[7]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// KernelName says which distance kernel was selected at init ("avx512", "avx2" or
// "scalar"), for load reports and benchmark logs.
func KernelName() string {
	switch {
	case useAVX512:
		return "avx512"
	case useAVX2:
		return "avx2"
	default:
		return "scalar"
	}
}

// usePrefetch turns on the prefetching kernels of the search loop; a variable so
// that BenchmarkPrefetch can compare both in one run.
var usePrefetch = useAVX2

// distPf is the distance of the search loop: a (the query) to b, prefetching the
// vector at next, which the loop scores after b. next must point into a vector
// of the index (any valid address would do: a prefetch never faults).
func distPf(dotMetric bool, a, b []float32, next *float32) float32 {
	if usePrefetch {
		if useAVX512 {
			if dotMetric {
				return 1 - dotPfAVX512(a, b, next)
			}
			return l2PfAVX512(a, b, next)
		}
		if dotMetric {
			return 1 - dotPfAVX2(a, b, next)
		}
		return l2PfAVX2(a, b, next)
	}
	if dotMetric {
		return 1 - dot(a, b)
	}
	return l2(a, b)
}

// DistanceFunc returns the metric's distance on vectors as the index stores them, using
// the same kernels as the index (SIMD where the CPU has it): squared L2, or 1 - dot for
// InnerProduct and Cosine (Cosine expects both vectors already normalised). It is for
// exact scans beside the index, such as a brute-force baseline. Vectors of different
// lengths give NaN rather than a distance over part of them.
func DistanceFunc(m Metric) func(a, b []float32) float32 {
	if m == L2 {
		return func(a, b []float32) float32 {
			if len(a) != len(b) {
				return float32(math.NaN())
			}
			return l2(a, b)
		}
	}
	return func(a, b []float32) float32 {
		if len(a) != len(b) {
			return float32(math.NaN())
		}
		return 1 - dot(a, b)
	}
}
