package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// maxVecDim bounds the per-record dimension a TEXMEX file may declare, so that a corrupt
// header is reported as such instead of turning into a multi-gigabyte allocation.
const maxVecDim = 1 << 20

// vectors is a set of equally sized vectors stored in one flat slice, row after row, so a
// whole dataset is a single allocation the GC does not have to scan.
type vectors struct {
	dim  int
	data []float32
}

// Len reports the number of vectors.
func (v *vectors) Len() int {
	if v.dim == 0 {
		return 0
	}
	return len(v.data) / v.dim
}

// Row returns vector i, sharing memory with the set.
func (v *vectors) Row(i int) []float32 {
	return v.data[i*v.dim : (i+1)*v.dim : (i+1)*v.dim]
}

// groundTruth holds, per query, the base indices of its nearest neighbours, nearest first,
// width entries per query.
type groundTruth struct {
	width int
	ids   []int32
}

// Len reports the number of queries covered.
func (g *groundTruth) Len() int {
	if g.width == 0 {
		return 0
	}
	return len(g.ids) / g.width
}

// Row returns the neighbour ids of query i.
func (g *groundTruth) Row(i int) []int32 {
	return g.ids[i*g.width : (i+1)*g.width : (i+1)*g.width]
}

// readVectors reads a TEXMEX vector file, choosing the element type by extension: .fvecs
// holds float32 components, .bvecs uint8 components (converted to float32).
func readVectors(path string) (*vectors, error) {
	var (
		elemSize int
		decode   func(dst []float32, src []byte)
	)
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".fvecs":
		elemSize, decode = 4, decodeFloat32s
	case ".bvecs":
		elemSize, decode = 1, decodeUint8s
	default:
		return nil, fmt.Errorf("read %s: unknown extension %q (want .fvecs or .bvecs)", path, ext)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read vectors: %w", err)
	}
	defer f.Close()
	size := int64(-1)
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		size = st.Size()
	}
	dim, data, err := decodeRecords(bufio.NewReaderSize(f, 1<<20), size, elemSize, func(dst []float32, src []byte) []float32 {
		n := len(dst)
		dst = grow(dst, len(src)/elemSize)
		decode(dst[n:], src)
		return dst
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return &vectors{dim: dim, data: data}, nil
}

// readGroundTruth reads a TEXMEX .ivecs file: per query, the int32 base indices of its
// nearest neighbours.
func readGroundTruth(path string) (*groundTruth, error) {
	if ext := strings.ToLower(filepath.Ext(path)); ext != ".ivecs" {
		return nil, fmt.Errorf("read %s: unknown extension %q for ground truth (want .ivecs)", path, ext)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read ground truth: %w", err)
	}
	defer f.Close()
	size := int64(-1)
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		size = st.Size()
	}
	width, ids, err := decodeRecords(bufio.NewReaderSize(f, 1<<20), size, 4, func(dst []int32, src []byte) []int32 {
		for i := 0; i+4 <= len(src); i += 4 {
			dst = append(dst, int32(binary.LittleEndian.Uint32(src[i:])))
		}
		return dst
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return &groundTruth{width: width, ids: ids}, nil
}

// decodeRecords parses the record stream shared by all TEXMEX formats: a little-endian
// int32 dimension followed by that many elements of elemSize bytes, repeated. Every record
// must have the same dimension. size, when not negative, is the stream's length; it lets
// the output be allocated once and a truncated file be reported before it is read.
func decodeRecords[T any](r io.Reader, size int64, elemSize int, appendRecord func(dst []T, src []byte) []T) (int, []T, error) {
	var (
		hdr  [4]byte
		dim  int
		buf  []byte
		out  []T
		recs int
	)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return 0, nil, fmt.Errorf("record %d: truncated header", recs)
			}
			return 0, nil, fmt.Errorf("record %d: %w", recs, err)
		}
		d := int32(binary.LittleEndian.Uint32(hdr[:]))
		if d <= 0 || d > maxVecDim {
			return 0, nil, fmt.Errorf("record %d: invalid dimension %d", recs, d)
		}
		if recs == 0 {
			dim = int(d)
			buf = make([]byte, dim*elemSize)
			recSize := int64(4 + dim*elemSize)
			if size >= 0 {
				if size%recSize != 0 {
					return 0, nil, fmt.Errorf("size %d is not a multiple of the record size %d (dimension %d): truncated file", size, recSize, dim)
				}
				out = make([]T, 0, size/recSize*int64(dim))
			}
		} else if int(d) != dim {
			return 0, nil, fmt.Errorf("record %d: dimension %d differs from the first record's %d", recs, d, dim)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return 0, nil, fmt.Errorf("record %d: truncated (want %d bytes of data)", recs, len(buf))
			}
			return 0, nil, fmt.Errorf("record %d: %w", recs, err)
		}
		out = appendRecord(out, buf)
		recs++
	}
	if recs == 0 {
		return 0, nil, errors.New("no records")
	}
	return dim, out, nil
}

// grow extends s by n elements, reusing capacity when there is some.
func grow(s []float32, n int) []float32 {
	if cap(s)-len(s) >= n {
		return s[:len(s)+n]
	}
	return append(s, make([]float32, n)...)
}

func decodeFloat32s(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func decodeUint8s(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = float32(src[i])
	}
}

// genSpec describes a generated dataset: -gen n,dim,clusters,seed.
type genSpec struct {
	n, dim, clusters int
	seed             int64
}

// Streams of the generator's PCG: the base set and the queries draw from the same mixture
// but from different streams, so the queries are never copies of base vectors and adding
// queries (-nq) does not change the base set.
const (
	genStreamBase  = 0x6261736576656373 // "basevecs"
	genStreamQuery = 0x7175657279766563 // "queryvec"
)

// generate builds a clustered Gaussian dataset: clusters centres drawn from N(0, c²I), and
// each vector is a centre (chosen uniformly) plus Gaussian noise with a diagonal covariance
// whose standard deviations decay as 1/sqrt(rank), the ranks permuted per cluster. The
// decay gives each cluster a low intrinsic dimension, as real embeddings have, instead of
// the isotropic noise that makes every point nearly equidistant in high dimensions; c is
// set so that the distance between centres is about twice the spread of a cluster, so
// clusters are distinct but their borders matter. Output is a pure function of the spec
// and nq.
func generate(spec genSpec, nq int) (base, queries *vectors) {
	rng := rand.New(rand.NewPCG(uint64(spec.seed), genStreamBase))
	dim := spec.dim
	var spread float64 // total within-cluster variance: sum of 1/(j+1)
	for j := range dim {
		spread += 1 / float64(j+1)
	}
	c := 2 * math.Sqrt(spread/float64(dim))
	centres := make([]float32, spec.clusters*dim)
	stddev := make([]float32, spec.clusters*dim)
	for k := range spec.clusters {
		for j := range dim {
			centres[k*dim+j] = float32(rng.NormFloat64() * c)
		}
		perm := rng.Perm(dim)
		for j := range dim {
			stddev[k*dim+j] = float32(1 / math.Sqrt(float64(perm[j]+1)))
		}
	}
	draw := func(rng *rand.Rand, n int) *vectors {
		v := &vectors{dim: dim, data: make([]float32, n*dim)}
		for i := range n {
			k := rng.IntN(spec.clusters)
			ctr, sd, row := centres[k*dim:(k+1)*dim], stddev[k*dim:(k+1)*dim], v.Row(i)
			for j := range row {
				row[j] = ctr[j] + float32(rng.NormFloat64())*sd[j]
			}
		}
		return v
	}
	base = draw(rng, spec.n)
	queries = draw(rand.New(rand.NewPCG(uint64(spec.seed), genStreamQuery)), nq)
	return base, queries
}
