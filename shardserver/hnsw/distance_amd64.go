package hnsw

import "golang.org/x/sys/cpu"

// Selected once at init. AVX-512 is preferred when present: on the Xeons this runs on
// it measured faster than AVX2 for dimensions >= 64 (BenchmarkKernel compares them).
var (
	useAVX2   = cpu.X86.HasAVX2 && cpu.X86.HasFMA
	useAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && useAVX2
	// The 512-bit Int8 kernel widens bytes to words in zmm registers: AVX512BW.
	useAVX512BW = useAVX512 && cpu.X86.HasAVX512BW
	// The Int8 kernel with VPDPBUSD (u8 x s8 dot products of four): AVX512_VNNI.
	useVNNI = useAVX512BW && cpu.X86.HasAVX512VNNI
)

// Assembly kernels in distance_amd64.s. They read len(a) elements of both slices;
// callers guarantee len(b) >= len(a).

//go:noescape
func l2AVX2(a, b []float32) float32

//go:noescape
func dotAVX2(a, b []float32) float32

//go:noescape
func l2AVX512(a, b []float32) float32

//go:noescape
func dotAVX512(a, b []float32) float32

//go:noescape
func l2PfAVX512(a, b []float32, next *float32) float32

//go:noescape
func dotPfAVX512(a, b []float32, next *float32) float32

//go:noescape
func prefetchLines(p *float32, n int)

//go:noescape
func l2PfAVX2(a, b []float32, next *float32) float32

//go:noescape
func dotPfAVX2(a, b []float32, next *float32) float32

// Int8 kernels in quant_amd64.s: len(u) a multiple of 32, len(c) >= len(u).

//go:noescape
func dotU8I16AVX2(c []byte, u []int16) int64

//go:noescape
func dotU8I16AVX512(c []byte, u []int16) int64

// dotU8I8VNNI is the sum of c[i]*u[i] over len(c) elements (a multiple of 32), with q
// = splitQuery(u): len(q)/2 a multiple of 64 and at least len(c).
//
//go:noescape
func dotU8I8VNNI(c []byte, q []int8) int64

// The preparation of an Int8 query in quant_amd64.s (AVX-512F): see scaleMax and
// quantize.

//go:noescape
func scaleMaxAVX512(v, s []float32) float32

//go:noescape
func quantizeAVX512(v, s []float32, inv float32, u []int16)

//go:noescape
func splitAVX512(u []int16, b []int8)
