//go:build !amd64

package hnsw

// Other architectures use the scalar kernels; these constants let the compiler drop
// the SIMD branches and the stubs below are never called.
const (
	useAVX2     = false
	useAVX512   = false
	useAVX512BW = false
	useVNNI     = false
)

func l2AVX2(a, b []float32) float32    { return l2Scalar(a, b) }
func dotAVX2(a, b []float32) float32   { return dotScalar(a, b) }
func l2AVX512(a, b []float32) float32  { return l2Scalar(a, b) }
func dotAVX512(a, b []float32) float32 { return dotScalar(a, b) }

func l2PfAVX512(a, b []float32, next *float32) float32  { return l2Scalar(a, b) }
func dotPfAVX512(a, b []float32, next *float32) float32 { return dotScalar(a, b) }
func prefetchLines(p *float32, n int)                   {}

func l2PfAVX2(a, b []float32, next *float32) float32  { return l2Scalar(a, b) }
func dotPfAVX2(a, b []float32, next *float32) float32 { return dotScalar(a, b) }

func dotU8I16AVX2(c []byte, u []int16) int64   { return dotU8I16Scalar(c, u) }
func dotU8I16AVX512(c []byte, u []int16) int64 { return dotU8I16Scalar(c, u) }

func dotU8I8VNNI(c []byte, q []int8) int64 { panic("unreachable: no VNNI kernel here") }

func scaleMaxAVX512(v, s []float32) float32                 { return scaleMaxScalar(v, s) }
func quantizeAVX512(v, s []float32, inv float32, u []int16) { quantizeScalar(v, s, inv, u) }

func splitAVX512(u []int16, b []int8) { panic("unreachable: no AVX-512 here") }
