package hnsw

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Metric is the distance between two vectors; smaller is closer.
type Metric uint8

const (
	// L2 is the squared Euclidean distance.
	L2 Metric = iota
	// InnerProduct is 1 - dot(a, b); vectors are stored as given.
	InnerProduct
	// Cosine is 1 - dot(a, b) of vectors normalised to unit length on insert (and
	// queries normalised before the search), so it equals the cosine distance.
	Cosine
)

var metricNames = [...]string{L2: "L2", InnerProduct: "InnerProduct", Cosine: "Cosine"}

// String returns "L2", "InnerProduct" or "Cosine", the names ParseMetric accepts.
func (m Metric) String() string {
	if int(m) < len(metricNames) {
		return metricNames[m]
	}
	return fmt.Sprintf("Metric(%d)", uint8(m))
}

// ParseMetric parses a metric name, case-insensitively.
func ParseMetric(s string) (Metric, error) {
	for m, name := range metricNames {
		if strings.EqualFold(s, name) {
			return Metric(m), nil
		}
	}
	return 0, fmt.Errorf("parse metric %q: want L2, InnerProduct or Cosine", s)
}

// Sentinel errors; the methods wrap them with %w, so test with errors.Is.
var (
	// ErrDimension: a vector (or query) does not have Config.Dim elements.
	ErrDimension = errors.New("hnsw: vector dimension mismatch")
	// ErrInvalidVector: a vector holds NaN or Inf, or is all zeros under Cosine.
	ErrInvalidVector = errors.New("hnsw: invalid vector")
	// ErrInvalidK: k <= 0 in a search.
	ErrInvalidK = errors.New("hnsw: k must be positive")
	// ErrNotFound: the key is not in the index.
	ErrNotFound = errors.New("hnsw: key not found")
	// ErrCorrupt: Read met input that is not a valid index file.
	ErrCorrupt = errors.New("hnsw: corrupt index data")
	// ErrConfig: New was given an unusable Config.
	ErrConfig = errors.New("hnsw: invalid config")
)

// Limits that bound memory and keep every offset in 32 bits; New and Read reject
// anything beyond them.
const (
	MaxDim   = 4096 // keeps one node chunk under 17 MiB, which bounds what Read allocates ahead of data
	MaxM     = 512
	maxLevel = 31 // levels are 0..maxLevel
)

// Config shapes an index. Zero fields take the documented defaults.
type Config struct {
	// Dim is the number of float32 elements of every vector; required, > 0.
	Dim int
	// Metric is the distance; L2 by default.
	Metric Metric
	// M is the number of links per node on the upper layers; layer 0 keeps 2*M.
	// Default 16: higher gives better recall at a given ef but more memory and a
	// slower build.
	M int
	// EfConstruction is the size of the candidate list while inserting; default
	// 200. Raised to M if smaller.
	EfConstruction int
	// EfSearch is the candidate list size of a search when SearchOptions.Ef is 0;
	// default 64.
	EfSearch int
	// Seed seeds the level generator, so a single-threaded build is reproducible;
	// default 1.
	Seed int64
	// Capacity is a hint for how many vectors to allocate room for; the index grows
	// as needed.
	Capacity int
	// Quantization is how the graph stores and compares vectors: NoQuantization
	// (float32, the default) or Int8 (see Int8: about a third of the memory, faster
	// walks, approximate distances unless Rerank is set).
	Quantization Quantization
	// Rerank, under Int8, re-ranks the ef candidates of every search by their exact
	// float32 distances, read from the vector file: results and distances are then
	// those of the float32 vectors, at the cost of one read per candidate. It skips,
	// unread, every candidate that a bound on the quantization error proves cannot be
	// among the k nearest read so far, so it reads about k of them on most data.
	Rerank bool
	// VectorDir is where an Int8 index keeps its float32 vectors, in an unlinked
	// temporary file; "" means os.TempDir().
	VectorDir string
}

func (c Config) withDefaults() (Config, error) {
	if c.Dim <= 0 || c.Dim > MaxDim {
		return c, fmt.Errorf("%w: Dim %d not in 1..%d", ErrConfig, c.Dim, MaxDim)
	}
	if int(c.Quantization) >= len(quantNames) {
		return c, fmt.Errorf("%w: unknown quantization %d", ErrConfig, c.Quantization)
	}
	if int(c.Metric) >= len(metricNames) {
		return c, fmt.Errorf("%w: unknown metric %d", ErrConfig, c.Metric)
	}
	if c.M == 0 {
		c.M = 16
	}
	if c.M < 2 || c.M > MaxM {
		return c, fmt.Errorf("%w: M %d not in 2..%d", ErrConfig, c.M, MaxM)
	}
	if c.EfConstruction == 0 {
		c.EfConstruction = 200
	}
	if c.EfConstruction < 0 || c.EfSearch < 0 || c.Capacity < 0 {
		return c, fmt.Errorf("%w: negative EfConstruction, EfSearch or Capacity", ErrConfig)
	}
	c.EfConstruction = max(c.EfConstruction, c.M)
	if c.EfSearch == 0 {
		c.EfSearch = 64
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	return c, nil
}

// Result is one neighbour found by a search.
type Result struct {
	Key      uint64
	Distance float32
}

// SearchOptions tunes one search.
type SearchOptions struct {
	// Ef is the candidate list size (raised to k); 0 means Config.EfSearch. Larger
	// is slower and more accurate.
	Ef int
	// Filter, when set, admits only the keys for which it returns true. It is
	// applied during the walk: rejected nodes are still traversed, so a selective
	// filter still finds k results when k admissible vectors exist.
	Filter func(key uint64) bool
}

// Node storage. Nodes live in chunks of chunkSize; node i of a chunk occupies
// words[i*stride : (i+1)*stride]:
//
//	[0]                 layer-0 link count
//	[1 .. 1+2M]         layer-0 links
//	[keyLo, keyHi]      the key
//	[flags]             flagDeleted | flagPending | flagFree, read atomically
//	[level]             low byte: level; next byte: levels the upper region holds
//	[upper]             offset of the upper-layer links in the upper arena
//	[vecOff ..]         the vector, 64-byte aligned, dim float32s
//
// so the links a search reads and the vector it scores sit in one block. Under Int8
// the two words after upper hold sums over the decoded vector (normOff), the next
// one the distance of the vector to its decoded one (for the re-ranking's floor), and
// the vector region holds codeLen bytes of codes instead.
const (
	chunkBits = 10
	chunkSize = 1 << chunkBits
	chunkMask = chunkSize - 1

	upperChunkBits  = 16
	upperChunkWords = 1 << upperChunkBits

	flagDeleted   = 1 << 0 // tombstone: navigable, never returned
	flagPending   = 1 << 1 // upsert in progress: navigable, not yet returned
	flagFree      = 1 << 2 // slot on the free list, unreachable
	flagCondemned = 1 << 3 // tombstone a running Vacuum will free: no new link may point to it
)

type chunk struct {
	words []uint32
	vecs  []float32 // the same memory as words, seen as float32
	codes []byte    // the same memory as words, seen as bytes (Int8 codes)
	locks [chunkSize]sync.Mutex
}

// Index is an HNSW graph. Create one with New or Read; all methods are safe for
// concurrent use (see the package doc for the details).
type Index struct {
	cfg                                         Config
	dim                                         int
	m, m0                                       int // max links on upper layers / on layer 0
	upStr                                       int // words per upper-layer list: 1 + m
	stride                                      int // words per node
	keyOff, flagOff, levelOff, upperOff, vecOff int
	dotMetric                                   bool // InnerProduct or Cosine: distance 1 - dot
	cosine                                      bool
	mult                                        float64

	// Int8 quantization (see quant.go); quant is false and the rest unused otherwise.
	quant     bool
	normOff   int // words of the decoded vector's squared norm and sum x[d]*offset[d], then |x - decoded x|
	codeLen   int // code bytes per node: dim rounded up to 32
	rerank    atomic.Bool
	qp        atomic.Pointer[quantParams]
	obsMu     sync.Mutex
	obsLo     []float32 // observed per-dimension range
	obsHi     []float32
	adds      atomic.Int64 // vectors added, for the retrain points
	quantMu   sync.RWMutex // held by a retrain; searches wait on it while quantBusy
	quantBusy atomic.Bool
	vf        *vecFile
	cleanup   runtime.Cleanup
	closeOnce sync.Once
	closeErr  error

	chunks atomic.Pointer[[]*chunk]
	upper  atomic.Pointer[[][]uint32]

	growMu    sync.Mutex // guards slot allocation, the free lists and the upper arena
	nslots    atomic.Uint32
	free      []uint32
	upperUsed int        // words used in the last upper chunk
	upperFree [][]uint32 // free upper regions by level count

	ep   atomic.Uint64 // (level+1)<<32 | id of the entry point; 0 when empty
	epMu sync.Mutex

	keysMu sync.RWMutex
	keys   map[uint64]uint32

	// structMu is held shared by Add and Delete and exclusively, for a moment, by
	// Freeze (so an image starts between writes); searches and Vacuum never take it.
	structMu sync.RWMutex
	keyLocks [64]sync.Mutex // serialise Add/Delete of one key

	rngMu sync.Mutex
	rng   *rand.Rand

	live     atomic.Int64
	deleted  atomic.Int64 // tombstones not yet reclaimed
	upsertIn atomic.Int64 // upserts between publish and tombstone
	upsertN  atomic.Uint64

	// Epoch-based reclamation: a search registers in readers[epoch&1]; Vacuum
	// flips the epoch and waits for the old side to drain before reusing slots.
	epoch   atomic.Uint64
	_       [56]byte
	readers [2]paddedCounter

	vacMu     sync.Mutex  // one Vacuum at a time
	vacuuming atomic.Bool // a background Vacuum is started or running

	// imgMu is held by an Image from Freeze to Release, and by Vacuum while it frees
	// slots: the slots an image reads are never freed under it. img is the image
	// being written, nil when none is.
	imgMu sync.Mutex
	img   atomic.Pointer[Image]

	searcher sync.Pool
	perEf    atomic.Uint32 // float32 bits: nodes a search scores per unit of ef (see SearchSubset)
}

type paddedCounter struct {
	n atomic.Int64
	_ [56]byte
}

// New returns an empty index.
func New(cfg Config) (*Index, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("new index: %w", err)
	}
	x := &Index{cfg: cfg, dim: cfg.Dim, m: cfg.M, m0: 2 * cfg.M}
	x.upStr = 1 + x.m
	x.keyOff = 1 + x.m0
	x.flagOff = x.keyOff + 2
	x.levelOff = x.flagOff + 1
	x.upperOff = x.levelOff + 1
	x.vecOff = roundUp(x.upperOff+1, 16)
	x.stride = roundUp(x.vecOff+x.dim, 16)
	if cfg.Quantization == Int8 {
		x.quant = true
		x.normOff = x.upperOff + 1
		x.vecOff = roundUp(x.normOff+3, 16)
		x.codeLen = roundUp(x.dim, 32)
		x.stride = roundUp(x.vecOff+x.codeLen/4, 16)
		x.rerank.Store(cfg.Rerank)
		if err := x.openVecFile(); err != nil {
			return nil, fmt.Errorf("new index: %w", err)
		}
	}
	x.dotMetric = cfg.Metric != L2
	x.cosine = cfg.Metric == Cosine
	x.mult = 1 / math.Log(float64(cfg.M))
	x.rng = rand.New(rand.NewPCG(uint64(cfg.Seed), 0x9e3779b97f4a7c15))
	x.keys = make(map[uint64]uint32, min(cfg.Capacity, 1<<24))
	x.upperFree = make([][]uint32, maxLevel+1)
	empty := []*chunk{}
	x.chunks.Store(&empty)
	noUpper := [][]uint32{}
	x.upper.Store(&noUpper)
	// A new searcher samples its first walk for the planner's cost measure (a pool may
	// drop searchers, as it does under the race detector).
	x.searcher.New = func() any { return &searcher{walks: costSampleMask} }
	x.growMu.Lock()
	for n := 0; n < min(cfg.Capacity, 1<<26); n += chunkSize {
		x.addChunkLocked()
	}
	x.growMu.Unlock()
	return x, nil
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }

// Config returns the configuration with defaults filled in.
func (x *Index) Config() Config { return x.cfg }

// Len returns the number of live vectors.
func (x *Index) Len() int { return int(x.live.Load()) }

// Contains reports whether key is in the index.
func (x *Index) Contains(key uint64) bool {
	x.keysMu.RLock()
	_, ok := x.keys[key]
	x.keysMu.RUnlock()
	return ok
}

// Get returns a copy of key's vector (normalised, under Cosine), and whether key is
// stored. Under Int8 the vector is read from the vector file: a failure of that file
// (an I/O error of local scratch space, now or before: the index refuses to go on
// after one) is returned as an error, never taken for an absent key.
func (x *Index) Get(key uint64) ([]float32, bool, error) {
	x.keysMu.RLock()
	defer x.keysMu.RUnlock()
	id, ok := x.keys[key]
	if !ok {
		return nil, false, nil
	}
	if x.quant {
		v := make([]float32, x.dim)
		err := x.vf.err()
		if err == nil {
			err = x.vf.read(id, v)
		}
		if err != nil {
			return nil, false, fmt.Errorf("get: %w", err)
		}
		return v, true, nil
	}
	tbl := *x.chunks.Load()
	return append([]float32(nil), x.vecIn(tbl, id)...), true, nil
}

// SetRerank turns the exact re-ranking of an Int8 index on or off (see
// Config.Rerank); it does nothing to an unquantized index.
func (x *Index) SetRerank(on bool) { x.rerank.Store(on && x.quant) }

// Keys calls fn for every live key, in no particular order, until fn returns
// false. It iterates over a snapshot, so fn may call any method of the index.
func (x *Index) Keys(fn func(key uint64) bool) {
	x.keysMu.RLock()
	keys := make([]uint64, 0, len(x.keys))
	for k := range x.keys {
		keys = append(keys, k)
	}
	x.keysMu.RUnlock()
	for _, k := range keys {
		if !fn(k) {
			return
		}
	}
}

// MemoryBytes estimates the bytes held by vectors, graph and key map, for load
// reports; it counts allocated capacity, not only what is in use. Under Int8 the
// vectors held are the codes: the float32 vectors are in the vector file, in the page
// cache, which the kernel shares and reclaims, and not in this figure.
func (x *Index) MemoryBytes() int64 {
	x.growMu.Lock()
	nChunks := len(*x.chunks.Load())
	nUpper := len(*x.upper.Load())
	nFree := cap(x.free)
	x.growMu.Unlock()
	x.keysMu.RLock()
	nKeys := len(x.keys)
	x.keysMu.RUnlock()
	per := int64(x.stride)*4 + int64(unsafe.Sizeof(sync.Mutex{}))
	const mapEntry = 8 + 4 + 4 // key, value, and about 4 bytes of map overhead per slot
	quant := int64(0)
	if x.quant {
		quant = int64(x.dim) * (4*4 + 256*2) // offsets, scales, the observed range, the node table
	}
	return int64(nChunks)*chunkSize*per + int64(nUpper)*upperChunkWords*4 +
		int64(nKeys)*mapEntry*8/7 + int64(nFree)*4 + quant
}

// addChunkLocked appends a node chunk. Called with growMu held; the new table is
// published before any id in the chunk is, so a reader that meets such an id and
// reloads the table finds the chunk.
func (x *Index) addChunkLocked() {
	old := *x.chunks.Load()
	c := &chunk{words: make([]uint32, chunkSize*x.stride)}
	c.vecs = unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(c.words))), len(c.words))
	c.codes = unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(c.words))), 4*len(c.words))
	tbl := make([]*chunk, len(old)+1)
	copy(tbl, old)
	tbl[len(old)] = c
	x.chunks.Store(&tbl)
}

// allocSlot returns a slot for a node of the given level, initialised with key,
// flags, level, empty link lists and vec. The slot is not reachable yet: either it
// is fresh, or Vacuum unlinked it and waited out every reader that could hold it,
// so the plain writes below race with nobody.
func (x *Index) allocSlot(key uint64, vec []float32, level int, flags uint32) uint32 {
	x.growMu.Lock()
	var id uint32
	// While an image is written, freed slots are not reused: every slot it reads
	// keeps the vector it had when the image began.
	if n := len(x.free); n > 0 && x.img.Load() == nil {
		id = x.free[n-1]
		x.free = x.free[:n-1]
	} else {
		id = x.nslots.Load()
		if int(id>>chunkBits) >= len(*x.chunks.Load()) {
			x.addChunkLocked()
		}
	}
	tbl := *x.chunks.Load()
	c := tbl[id>>chunkBits]
	base := int(id&chunkMask) * x.stride
	w := c.words[base : base+x.stride]
	oldLevels := int(w[x.levelOff] >> 8)
	upOff := w[x.upperOff]
	if level > oldLevels {
		if oldLevels > 0 {
			x.upperFree[oldLevels] = append(x.upperFree[oldLevels], upOff)
		}
		upOff = x.allocUpperLocked(level)
		oldLevels = level
	}
	if id == x.nslots.Load() {
		x.nslots.Store(id + 1)
	}
	x.growMu.Unlock()

	atomic.StoreUint32(&w[0], 0)
	w[x.keyOff] = uint32(key)
	w[x.keyOff+1] = uint32(key >> 32)
	w[x.levelOff] = uint32(level) | uint32(oldLevels)<<8
	w[x.upperOff] = upOff
	if x.quant {
		// Under structMu (shared), so no retrain changes the parameters meanwhile.
		b := (base + x.vecOff) * 4
		norm, xo, dev := x.qp.Load().encode(vec, c.codes[b:b+x.codeLen])
		w[x.normOff] = math.Float32bits(norm)
		w[x.normOff+1] = math.Float32bits(xo)
		w[x.normOff+2] = math.Float32bits(dev)
	} else {
		copy(c.vecs[base+x.vecOff:base+x.vecOff+x.dim], vec)
	}
	if level > 0 {
		up := *x.upper.Load()
		for l := 1; l <= level; l++ {
			uw, ub := upperList(up, upOff, l, x.upStr)
			atomic.StoreUint32(&uw[ub], 0)
		}
	}
	atomic.StoreUint32(&w[x.flagOff], flags)
	return id
}

// releaseSlot puts back a slot that allocSlot returned and nothing links to (its
// vector could not be stored).
func (x *Index) releaseSlot(id uint32) {
	tbl := *x.chunks.Load()
	atomic.StoreUint32(&tbl[id>>chunkBits].words[int(id&chunkMask)*x.stride+x.flagOff], flagFree)
	x.growMu.Lock()
	x.free = append(x.free, id)
	x.growMu.Unlock()
}

// allocUpperLocked returns the arena offset of a region for levels 1..level.
// Regions never straddle arena chunks; offsets are chunk<<16 | word.
func (x *Index) allocUpperLocked(level int) uint32 {
	if fl := x.upperFree[level]; len(fl) > 0 {
		off := fl[len(fl)-1]
		x.upperFree[level] = fl[:len(fl)-1]
		return off
	}
	need := level * x.upStr
	up := *x.upper.Load()
	if len(up) == 0 || x.upperUsed+need > upperChunkWords {
		tbl := make([][]uint32, len(up)+1)
		copy(tbl, up)
		tbl[len(up)] = make([]uint32, upperChunkWords)
		x.upper.Store(&tbl)
		up = tbl
		x.upperUsed = 0
	}
	off := uint32(len(up)-1)<<upperChunkBits | uint32(x.upperUsed)
	x.upperUsed += need
	return off
}

// upperList locates the list of layer l >= 1 in the upper arena.
func upperList(up [][]uint32, off uint32, l, upStr int) ([]uint32, int) {
	return up[off>>upperChunkBits], int(off&(upperChunkWords-1)) + (l-1)*upStr
}

func (x *Index) vecIn(tbl []*chunk, id uint32) []float32 {
	c := tbl[id>>chunkBits]
	base := int(id&chunkMask)*x.stride + x.vecOff
	return c.vecs[base : base+x.dim : base+x.dim]
}

func (x *Index) keyIn(tbl []*chunk, id uint32) uint64 {
	w := tbl[id>>chunkBits].words
	base := int(id&chunkMask)*x.stride + x.keyOff
	return uint64(w[base]) | uint64(w[base+1])<<32
}

func (x *Index) flagsIn(tbl []*chunk, id uint32) uint32 {
	w := tbl[id>>chunkBits].words
	return atomic.LoadUint32(&w[int(id&chunkMask)*x.stride+x.flagOff])
}

func (x *Index) levelIn(tbl []*chunk, id uint32) int {
	w := tbl[id>>chunkBits].words
	return int(w[int(id&chunkMask)*x.stride+x.levelOff] & 0xff)
}

// setFlag sets bits in id's flags; it reports whether they were all clear before.
func (x *Index) setFlag(tbl []*chunk, id uint32, bits uint32) bool {
	w := tbl[id>>chunkBits].words
	p := &w[int(id&chunkMask)*x.stride+x.flagOff]
	for {
		old := atomic.LoadUint32(p)
		if old&bits == bits {
			return false
		}
		if atomic.CompareAndSwapUint32(p, old, old|bits) {
			return old&bits == 0
		}
	}
}

// markDeleted tombstones id, which the caller holds the key lock of and found live in
// the key map (so each slot is tombstoned once), and reports whether it was live. An
// image being written learns first that id was live when the image began.
func (x *Index) markDeleted(tbl []*chunk, id uint32) bool {
	if img := x.img.Load(); img != nil {
		img.liveAtStart(id)
	}
	return x.setFlag(tbl, id, flagDeleted)
}

func (x *Index) clearFlag(tbl []*chunk, id uint32, bits uint32) {
	w := tbl[id>>chunkBits].words
	p := &w[int(id&chunkMask)*x.stride+x.flagOff]
	for {
		old := atomic.LoadUint32(p)
		if atomic.CompareAndSwapUint32(p, old, old&^bits) {
			return
		}
	}
}

// randomLevel draws a level with P(level >= l) = M^-l, as in the paper with
// mL = 1/ln(M).
func (x *Index) randomLevel() int {
	x.rngMu.Lock()
	u := x.rng.Float64()
	x.rngMu.Unlock()
	if u <= 0 {
		return maxLevel
	}
	return min(int(-math.Log(u)*x.mult), maxLevel)
}

// Prepare validates vec (its dimension, no NaN or Inf, a norm under Cosine) and
// returns it as the index stores it and compares it: a normalised copy under Cosine,
// else vec itself. Exact scans beside the index compare prepared vectors with
// DistanceFunc, and get the distances a search of the index gives.
func (x *Index) Prepare(vec []float32) ([]float32, error) {
	return x.checkVector(vec, nil)
}

// checkVector validates a vector (or query) and returns the form to store or
// search with: a normalised copy in buf under Cosine, else vec itself.
func (x *Index) checkVector(vec []float32, buf []float32) ([]float32, error) {
	if len(vec) != x.dim {
		return nil, fmt.Errorf("%w: got %d elements, want %d", ErrDimension, len(vec), x.dim)
	}
	// Every query pays for this check, so it is one pass of the SIMD kernel: the sum of
	// squares is finite when every element is (a NaN or ±Inf makes it NaN or +Inf), and
	// only when it is not are the elements looked at, to tell a bad one from a sum
	// that overflowed. v-v is NaN exactly when v is NaN or ±Inf.
	if n := dot(vec, vec); n-n != 0 {
		for _, v := range vec {
			if d := v - v; d != d {
				return nil, fmt.Errorf("%w: NaN or Inf element", ErrInvalidVector)
			}
		}
	}
	if !x.cosine {
		return vec, nil
	}
	var norm float64
	for _, v := range vec {
		norm += float64(v) * float64(v)
	}
	if norm == 0 || math.IsInf(norm, 0) {
		return nil, fmt.Errorf("%w: zero or overflowing norm under Cosine", ErrInvalidVector)
	}
	// In float64: below a norm of 1/MaxFloat32 the reciprocal overflows float32, and
	// the vector would be stored as +Inf and NaN.
	inv := 1 / math.Sqrt(norm)
	buf = buf[:0]
	for _, v := range vec {
		buf = append(buf, float32(float64(v)*inv))
	}
	return buf, nil
}

func (x *Index) keyLock(key uint64) *sync.Mutex {
	h := key * 0x9e3779b97f4a7c15
	return &x.keyLocks[h>>58]
}
