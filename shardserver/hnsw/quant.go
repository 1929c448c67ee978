package hnsw

import (
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"strings"
	"sync"
)

// Quantization is how an index stores the vectors its graph is built and walked on.
type Quantization uint8

const (
	// NoQuantization keeps float32 vectors in the node blocks (the default).
	NoQuantization Quantization = iota
	// Int8 keeps one byte per dimension in the node blocks: per dimension d, a code
	// c = round((v[d]-offset[d])/scale[d]) in 0..255, with offset and scale learned from
	// the data. The float32 vectors go to a vector file (unlinked, in
	// Config.VectorDir) read with pread through the page cache: Get, snapshots and the
	// optional exact re-ranking read them there, never from the Go heap.
	Int8
)

var quantNames = [...]string{NoQuantization: "None", Int8: "Int8"}

// String returns "None" or "Int8", the names ParseQuantization accepts.
func (q Quantization) String() string {
	if int(q) < len(quantNames) {
		return quantNames[q]
	}
	return fmt.Sprintf("Quantization(%d)", uint8(q))
}

// ParseQuantization parses "None" or "Int8", case-insensitively; "" is None.
func ParseQuantization(s string) (Quantization, error) {
	if s == "" {
		return NoQuantization, nil
	}
	for q, name := range quantNames {
		if strings.EqualFold(s, name) {
			return Quantization(q), nil
		}
	}
	return 0, fmt.Errorf("parse quantization %q: want None or Int8", s)
}

// How Int8 distances are computed. A query q (or a stored node, decoded) is
// prepared once: u[d] = round(q[d]*scale[d]/alpha) as int16, |u| <= uMax, so that
//
//	dot(q, x) = sum q[d]*(offset[d] + scale[d]*c[d]) ~ qo + alpha * sum u[d]*c[d]
//
// with qo = sum q[d]*offset[d]. The sum of u[d]*c[d] is integer arithmetic on the
// codes (VPMADDWD on AVX2: 16 dimensions per instruction; with VNNI, VPDPBUSD on u
// split into two bytes, see splitQuery: 64 dimensions per instruction and byte), exact
// and the same on every kernel. InnerProduct and Cosine are 1 - dot; L2 is |q|^2 + |x|^2 - 2 dot, with |x|^2
// of the decoded vector kept beside the codes. Only the query side is rounded finely
// (1 part in 8191); the stored side carries the 8-bit code error.
//
// uMax bounds every int32 lane of the kernels: a lane adds 2 products of at most
// 255*uMax per 16 dimensions, so up to MaxDim = 4096 dimensions it stays below
// 2^31 (256 * 2 * 255 * 8191 = 1.07e9).
const uMax = 8191

// Retraining. The offsets and scales are learned from the observed per-dimension
// minimum and maximum. While the index is young they are relearned when the number
// of vectors added reaches 32, 128, 512, 2048 and 8192 (if the data drifted since),
// re-encoding every stored vector under a short stop of searches and writes; past
// retrainLast, values outside the learned range are clipped to it, the range seen is
// still recorded, and a snapshot (WriteTo) writes relearned parameters when the data
// drifted, which an index loaded from it encodes with.
const (
	retrainFirst = 32
	retrainLast  = 8192
)

// quantParams are the per-dimension offset and scale of the codes; never changed
// once published (a retrain publishes new ones).
type quantParams struct {
	off, scale []float32

	// A stored node is prepared as a query by table lookups, with one alpha for
	// every node: nodeU[d*256+c] = round(x*scale[d]/nodeAlpha) for the decoded value
	// x = off[d] + scale[d]*c. Built once, on first use (inserts and Vacuum).
	tableOnce sync.Once
	nodeU     []int16
	nodeAlpha float32

	// Bounds for the re-ranking (see floorOf), computed on first use: xmax =
	// |decoded x| at most; offLen = |offset|.
	boundOnce    sync.Once
	xmax, offLen float64
}

// bounds returns xmax and offLen.
func (p *quantParams) bounds() (xmax, offLen float64) {
	p.boundOnce.Do(func() {
		var x2, o2 float64
		for d, s := range p.scale {
			lo, hi := float64(p.off[d]), float64(p.off[d])+255*float64(s)
			x2 += max(lo*lo, hi*hi)
			o2 += lo * lo
		}
		p.xmax, p.offLen = math.Sqrt(x2), math.Sqrt(o2)
	})
	return p.xmax, p.offLen
}

// learnParams maps [lo[d], hi[d]] onto the 256 codes.
func learnParams(lo, hi []float32) *quantParams {
	p := &quantParams{off: make([]float32, len(lo)), scale: make([]float32, len(lo))}
	for d := range lo {
		p.off[d] = lo[d]
		if r := hi[d] - lo[d]; r > 0 {
			p.scale[d] = r / 255
		}
	}
	return p
}

// table returns nodeU and nodeAlpha, building them on first use.
func (p *quantParams) table() ([]int16, float32) {
	p.tableOnce.Do(func() {
		var mx float32
		for d, s := range p.scale {
			for _, x := range [2]float32{p.off[d], p.off[d] + 255*s} {
				mx = max(mx, x*s, -x*s)
			}
		}
		p.nodeAlpha = 1
		p.nodeU = make([]int16, 256*len(p.scale))
		if mx == 0 {
			return
		}
		p.nodeAlpha = mx / uMax
		inv := uMax / mx
		for d, s := range p.scale {
			for c := range 256 {
				x := p.off[d] + s*float32(c)
				p.nodeU[d*256+c] = int16(math.Round(float64(x * s * inv)))
			}
		}
	})
	return p.nodeU, p.nodeAlpha
}

// drifted reports whether the observed range [lo, hi] leaves p's range by more than
// 1/64 of it (4 codes) in some dimension, or grew from nothing.
func drifted(p *quantParams, lo, hi []float32) bool {
	for d := range lo {
		r := 255 * p.scale[d]
		slack := r / 64
		if lo[d] < p.off[d]-slack || hi[d] > p.off[d]+r+slack {
			return true
		}
	}
	return false
}

// encode writes v's codes into c (len >= dim; the padding is left as is, zero) and
// returns, for the decoded vector x, |x|^2 and sum x[d]*offset[d], and |v - x| rounded
// up: at most half a step per dimension, more where a value fell outside the range
// of p and was clipped.
func (p *quantParams) encode(v []float32, c []byte) (norm, xo, dev float32) {
	c = c[:len(v)]
	off, scale := p.off[:len(v)], p.scale[:len(v)]
	var dev2 float64
	for d, f := range v {
		var code float32
		if s := scale[d]; s > 0 {
			code = float32(math.Round(float64((f - off[d]) / s)))
		}
		code = min(max(code, 0), 255)
		c[d] = byte(code)
		x := off[d] + scale[d]*code
		norm += x * x
		xo += x * off[d]
		e := float64(f) - float64(x)
		dev2 += e * e
	}
	return norm, xo, float32(math.Sqrt(dev2) * (1 + 1e-6))
}

// qquery is a vector prepared for Int8 distances (see uMax).
type qquery struct {
	u     []int16 // codeLen entries; the padding is zero
	b     []int8  // u split into bytes for the VNNI kernel (see splitQuery), when it runs
	alpha float32
	qo    float32 // sum q[d]*offset[d]
	qq    float32 // |q|^2, for L2
}

// prepare fills qq for the float vector v. qo and qq shift every distance of the
// query alike, so they come from the float kernels (their rounding differs from a
// plain loop's, not the ranking).
func (x *Index) prepare(qq *qquery, p *quantParams, v []float32) {
	if cap(qq.u) < x.codeLen {
		qq.u = make([]int16, x.codeLen)
	}
	u := qq.u[:x.codeLen]
	qq.u = u
	scale := p.scale[:len(v)]
	mx := scaleMax(v, scale)
	qq.alpha, qq.qo, qq.qq = 1, dot(v, p.off), dot(v, v)
	if mx == 0 {
		clear(u)
		qq.split()
		return
	}
	qq.alpha = mx / uMax
	quantize(v, scale, uMax/mx, u)
	qq.split()
}

// scaleMax returns the largest |v[i]*s[i]|.
func scaleMax(v, s []float32) float32 {
	if useAVX512 {
		return scaleMaxAVX512(v, s)
	}
	return scaleMaxScalar(v, s)
}

func scaleMaxScalar(v, s []float32) float32 {
	s = s[:len(v)]
	var mx float32
	for i, f := range v {
		if t := absf(f * s[i]); t > mx {
			mx = t
		}
	}
	return mx
}

// quantize sets u[i] to r = v[i]*s[i]*inv rounded half away from zero, for |r| <=
// uMax; len(u) >= len(v). Without branches: the signs of a query's values follow no
// pattern.
func quantize(v, s []float32, inv float32, u []int16) {
	if useAVX512 {
		quantizeAVX512(v, s, inv, u)
		return
	}
	quantizeScalar(v, s, inv, u)
}

func absf(f float32) float32 { return math.Float32frombits(math.Float32bits(f) &^ (1 << 31)) }

func quantizeScalar(v, s []float32, inv float32, u []int16) {
	s, u = s[:len(v)], u[:len(v)]
	for i, f := range v {
		r := float32(float32(f*s[i]) * inv) // rounded at each step, as the SIMD kernel
		u[i] = int16(r + math.Float32frombits(math.Float32bits(r)&(1<<31)|math.Float32bits(0.5)))
	}
}

// split fills qq.b from qq.u where the VNNI kernel runs.
func (qq *qquery) split() {
	if useVNNI {
		qq.b = splitQuery(qq.u, qq.b)
	}
}

// splitQuery writes u as bytes for dotU8I8VNNI, into b (reused when large enough): u[i]
// = 128*h[i] + l[i] with h[i] = u[i]>>7 in -64..63 and l[i] = u[i]&127 in 0..127,
// h in b[:n] and l in b[n:], n = len(u) rounded up to 64 and the padding zero.
func splitQuery(u []int16, b []int8) []int8 {
	n := roundUp(len(u), 64)
	if cap(b) < 2*n {
		b = make([]int8, 2*n)
	}
	b = b[:2*n]
	if useVNNI && len(u)%32 == 0 {
		splitAVX512(u, b)
		return b
	}
	h, l := b[:len(u):len(u)], b[n:n+len(u):n+len(u)]
	for i, v := range u {
		h[i] = int8(v >> 7)
		l[i] = int8(v & 127)
	}
	return b
}

// dot is the sum of c[i]*u[i], the integer part of the prepared query's dot product
// with codes c (codeLen of them), by the fastest kernel of the CPU.
func (qq *qquery) dot(c []byte) int64 {
	if useVNNI {
		return dotU8I8VNNI(c, qq.b)
	}
	return dotU8I16(c, qq.u)
}

// prepareNode fills qq from stored node id, its decoded vector: one table lookup per
// dimension, and the sums kept beside the codes.
func (x *Index) prepareNode(s *searcher, qq *qquery, id uint32) {
	tbl, alpha := x.qp.Load().table()
	if cap(qq.u) < x.codeLen {
		qq.u = make([]int16, x.codeLen)
	}
	u := qq.u[:x.codeLen]
	qq.u = u
	ch := s.chunkOf(x, id)
	base := int(id&chunkMask) * x.stride
	b := (base + x.vecOff) * 4
	c := ch.codes[b : b+x.dim : b+x.dim]
	tbl = tbl[:256*len(c)]
	for d, code := range c {
		u[d] = tbl[d<<8|int(code)]
	}
	qq.split()
	qq.alpha = alpha
	qq.qq = math.Float32frombits(ch.words[base+x.normOff])
	qq.qo = math.Float32frombits(ch.words[base+x.normOff+1])
}

// codesOf returns id's codes, codeLen bytes.
func (x *Index) codesOf(s *searcher, id uint32) []byte {
	b := (int(id&chunkMask)*x.stride + x.vecOff) * 4
	return s.chunkOf(x, id).codes[b : b+x.codeLen : b+x.codeLen]
}

// qdist is the Int8 distance of the prepared qq to node id.
func (x *Index) qdist(s *searcher, qq *qquery, id uint32) float32 {
	c := s.chunkOf(x, id)
	base := int(id&chunkMask) * x.stride
	b := (base + x.vecOff) * 4
	dot := qq.qo + qq.alpha*float32(qq.dot(c.codes[b:b+x.codeLen:b+x.codeLen]))
	if x.dotMetric {
		return 1 - dot
	}
	return qq.qq + math.Float32frombits(c.words[base+x.normOff]) - 2*dot
}

// dotU8I16 returns the sum of c[i]*u[i] over len(u) elements, a multiple of 32;
// len(c) >= len(u). Exact: every kernel returns the same value.
func dotU8I16(c []byte, u []int16) int64 {
	if useAVX512BW {
		return dotU8I16AVX512(c, u)
	}
	if useAVX2 {
		return dotU8I16AVX2(c, u)
	}
	return dotU8I16Scalar(c, u)
}

// dotU8I16Scalar is the portable kernel.
func dotU8I16Scalar(c []byte, u []int16) int64 {
	c = c[:len(u)]
	var s0, s1, s2, s3 int64
	for i := 0; i+4 <= len(u); i += 4 {
		cc := c[i : i+4 : i+4]
		uu := u[i : i+4 : i+4]
		s0 += int64(cc[0]) * int64(uu[0])
		s1 += int64(cc[1]) * int64(uu[1])
		s2 += int64(cc[2]) * int64(uu[2])
		s3 += int64(cc[3]) * int64(uu[3])
	}
	return s0 + s1 + s2 + s3
}

// fromNode measures distances from one stored node to others in the index's own
// representation: its float32 vector, or its decoded codes prepared as a query.
type fromNode struct {
	v []float32
	q qquery
}

func (x *Index) from(s *searcher, o *fromNode, id uint32) {
	if x.quant {
		x.prepareNode(s, &o.q, id)
		return
	}
	o.v = s.vecOf(x, id)
}

func (x *Index) distTo(s *searcher, o *fromNode, id uint32) float32 {
	if x.quant {
		return x.qdist(s, &o.q, id)
	}
	return x.dist(o.v, s.vecOf(x, id))
}

// distQuery is the distance of the walk's query (s.q for the float kernels, s.pq
// prepared from it under Int8) to node id.
func (x *Index) distQuery(s *searcher, q []float32, id uint32) float32 {
	if x.quant {
		return x.qdist(s, &s.pq, id)
	}
	return x.dist(q, s.vecOf(x, id))
}

// observe records v's values in the observed range: always while the index is young
// (the ranges retraining learns from), later only when v leaves the learned range.
func (x *Index) observe(v []float32) {
	p := x.qp.Load()
	if p != nil && x.adds.Load() >= retrainLast && !outside(p, v) {
		return
	}
	x.obsMu.Lock()
	defer x.obsMu.Unlock()
	if x.obsLo == nil {
		x.obsLo = append([]float32(nil), v...)
		x.obsHi = append([]float32(nil), v...)
	} else {
		for d, f := range v {
			x.obsLo[d] = min(x.obsLo[d], f)
			x.obsHi[d] = max(x.obsHi[d], f)
		}
	}
	if x.qp.Load() == nil {
		x.qp.Store(learnParams(x.obsLo, x.obsHi))
	}
}

func outside(p *quantParams, v []float32) bool {
	for d, f := range v {
		if f < p.off[d] || f > p.off[d]+255*p.scale[d] {
			return true
		}
	}
	return false
}

// observed returns copies of the observed range.
func (x *Index) observed() (lo, hi []float32) {
	x.obsMu.Lock()
	defer x.obsMu.Unlock()
	return append([]float32(nil), x.obsLo...), append([]float32(nil), x.obsHi...)
}

// relearned returns the parameters a snapshot should carry: the current ones, or new
// ones learned from the observed range if the data drifted.
func (x *Index) relearned() *quantParams {
	p := x.qp.Load()
	if p == nil {
		return nil
	}
	lo, hi := x.observed()
	if lo != nil && drifted(p, lo, hi) {
		return learnParams(lo, hi)
	}
	return p
}

// isRetrainPoint: 32, 128, 512, 2048, 8192.
func isRetrainPoint(n int64) bool {
	return n >= retrainFirst && n <= retrainLast && n&(n-1) == 0 && bits.TrailingZeros64(uint64(n))%2 == 1
}

// maybeRetrain relearns the parameters if the data drifted, re-encoding every stored
// vector. It stops writers (structMu), Vacuum (vacMu) and searches (quantBusy, then
// the epoch wait) while it runs; it runs only while the index is young.
func (x *Index) maybeRetrain() error {
	x.vacMu.Lock()
	defer x.vacMu.Unlock()
	x.structMu.Lock()
	defer x.structMu.Unlock()
	p := x.relearned()
	if p == nil || p == x.qp.Load() {
		return nil
	}
	x.quantMu.Lock()
	defer x.quantMu.Unlock()
	x.quantBusy.Store(true)
	defer x.quantBusy.Store(false)
	x.waitReaders()
	return x.reencode(p)
}

// reencode encodes every stored vector with p and publishes p. Nothing else may
// touch the index meanwhile.
func (x *Index) reencode(p *quantParams) error {
	s := x.getSearcher()
	defer x.putSearcher(s)
	s.refresh(x)
	buf := make([]float32, x.dim)
	for id := range x.nslots.Load() {
		if x.flagsIn(s.tbl, id)&flagFree != 0 {
			continue
		}
		v, err := x.vf.vector(id, buf)
		if err != nil {
			return err
		}
		c := s.chunkOf(x, id)
		base := int(id&chunkMask) * x.stride
		b := (base + x.vecOff) * 4
		norm, xo, dev := p.encode(v, c.codes[b:b+x.codeLen])
		c.words[base+x.normOff] = math.Float32bits(norm)
		c.words[base+x.normOff+1] = math.Float32bits(xo)
		c.words[base+x.normOff+2] = math.Float32bits(dev)
	}
	x.qp.Store(p)
	return nil
}

// waitQuant is called by a search registered as a reader (side): while a retrain
// runs it steps out, waits for it, and registers again.
func (x *Index) waitQuant(side uint64) uint64 {
	for x.quantBusy.Load() {
		x.exit(side)
		x.quantMu.RLock()
		x.quantMu.RUnlock() //nolint:staticcheck // an empty critical section: waiting for the retrain
		side = x.enter()
	}
	return side
}

// Close releases the vector file of an Int8 index; the index must not be used
// afterwards. Indexes that are not closed release it when garbage collected. It does
// nothing for an unquantized index.
func (x *Index) Close() error {
	if x.vf == nil {
		return nil
	}
	x.closeOnce.Do(func() {
		x.cleanup.Stop()
		x.closeErr = x.vf.close()
	})
	return x.closeErr
}

func (x *Index) openVecFile() error {
	vf, err := newVecFile(x.cfg.VectorDir, x.dim)
	if err != nil {
		return err
	}
	x.vf = vf
	x.cleanup = runtime.AddCleanup(x, func(vf *vecFile) { _ = vf.close() }, vf)
	return nil
}
