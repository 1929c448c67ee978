package hnsw

import (
	"fmt"
	"math"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// searcher is the per-goroutine scratch of a search or an insert, recycled through
// a sync.Pool so that a search in steady state allocates nothing.
type searcher struct {
	tbl   []*chunk   // snapshot of the chunk table; refreshed on a miss
	up    [][]uint32 // snapshot of the upper arena
	vis   []uint16   // visited tags, indexed by node id
	tag   uint16
	cand  minHeap
	res   maxHeap
	q     []float32 // normalised query under Cosine
	out   []pair
	tmp   []pair
	kept  []pair
	back  []pair
	batch []uint32

	scored int  // nodes scored by searchLayer since the search began
	walks  uint // searches by this searcher, to sample their cost

	pq     qquery   // the walk's query, prepared for Int8
	fc, fn fromNode // distances from a candidate (heuristic) and from a node (links)
	fv     []float32
	kth    []float32 // the k smallest exact distances while re-ranking
}

func (x *Index) getSearcher() *searcher {
	s := x.searcher.Get().(*searcher)
	s.refresh(x)
	return s
}

func (x *Index) putSearcher(s *searcher) {
	s.tbl, s.up = nil, nil
	x.searcher.Put(s)
}

func (s *searcher) refresh(x *Index) {
	s.tbl = *x.chunks.Load()
	s.up = *x.upper.Load()
}

// chunkOf returns id's chunk, reloading the table if id was published after the
// snapshot was taken.
func (s *searcher) chunkOf(x *Index, id uint32) *chunk {
	ci := int(id >> chunkBits)
	if ci >= len(s.tbl) {
		s.refresh(x)
	}
	return s.tbl[ci]
}

// vecOf returns id's vector.
func (s *searcher) vecOf(x *Index, id uint32) []float32 {
	vb := int(id&chunkMask)*x.stride + x.vecOff
	return s.chunkOf(x, id).vecs[vb : vb+x.dim : vb+x.dim]
}

// flagsOf returns id's flags.
func (s *searcher) flagsOf(x *Index, id uint32) uint32 {
	return atomic.LoadUint32(&s.chunkOf(x, id).words[int(id&chunkMask)*x.stride+x.flagOff])
}

// upperOf returns the words and index of id's list on layer l >= 1.
func (s *searcher) upperOf(x *Index, id uint32) (uint32, []uint32) {
	c := s.chunkOf(x, id)
	off := c.words[int(id&chunkMask)*x.stride+x.upperOff]
	if int(off>>upperChunkBits) >= len(s.up) {
		s.refresh(x)
	}
	return off, s.up[off>>upperChunkBits]
}

// newEpoch starts a visited set covering at least n ids. Tags are 16-bit epochs:
// marking is one store, and the array is cleared only once every 65535 searches.
func (s *searcher) newEpoch(n int) {
	if len(s.vis) < n {
		s.vis = make([]uint16, max(n, 2*len(s.vis)))
		s.tag = 0
	}
	s.tag++
	if s.tag == 0 {
		clear(s.vis)
		s.tag = 1
	}
}

// visit marks id and reports whether it was already marked.
func (s *searcher) visit(id uint32) bool {
	if int(id) >= len(s.vis) {
		grown := make([]uint16, max(int(id)+1, 2*len(s.vis)))
		copy(grown, s.vis)
		s.vis = grown
	}
	if s.vis[id] == s.tag {
		return true
	}
	s.vis[id] = s.tag
	return false
}

func (x *Index) dist(q, v []float32) float32 {
	if x.dotMetric {
		return 1 - dot(q, v)
	}
	return l2(q, v)
}

// linked reports whether id has a layer-0 list, that is whether its insert has
// linked every layer of it (layers are linked top-down, layer 0 last).
func (s *searcher) linked(x *Index, id uint32) bool {
	return atomic.LoadUint32(&s.chunkOf(x, id).words[int(id&chunkMask)*x.stride]) > 0
}

// greedy walks layer l from ep to a local minimum of the distance to q: the
// ef=1 descent through the upper layers. It moves only to nodes whose insert has
// linked layer 0: a node being inserted is reachable on its upper layers (through
// back-links) before it has its lower lists, and a walk of layer 0 started from it
// would end at once, with that node alone (none at all when it is an upsert's
// pending node).
func (x *Index) greedy(s *searcher, q []float32, ep pair, l int) pair {
	if x.quant {
		return x.greedyQ(s, ep, l)
	}
	for changed := true; changed; {
		changed = false
		off, uw := s.upperOf(x, ep.id)
		base := int(off&(upperChunkWords-1)) + (l-1)*x.upStr
		n := min(int(atomic.LoadUint32(&uw[base])), x.m)
		if n == 0 {
			break
		}
		nb := atomic.LoadUint32(&uw[base+1])
		cur := s.vecOf(x, nb)
		for i := 1; i <= n; i++ {
			nextID, next := nb, cur
			if i < n {
				nextID = atomic.LoadUint32(&uw[base+i+1])
				next = s.vecOf(x, nextID)
			}
			if d := distPf(x.dotMetric, q, cur, &next[0]); d < ep.d && s.linked(x, nb) {
				ep = pair{d, nb}
				changed = true
			}
			nb, cur = nextID, next
		}
	}
	return ep
}

// collect modes of searchLayer.
const (
	collectLive    = iota // search: live nodes that pass the filter
	collectNotDead        // construction: any node that is not a tombstone
	collectAny            // construction when only tombstones are in reach (not condemned ones)
)

// searchLayer is the paper's SEARCH-LAYER with hnswlib's refinements: it starts
// from ep, keeps the ef closest collectable nodes in s.res and stops when the
// closest unexpanded candidate is farther than the farthest of ef results. Nodes
// that are not collectable (tombstones, filtered out, pending) are still expanded,
// so the walk goes through them; while fewer than ef results are held the bound is
// infinite, which is what lets a selective filter still find k results.
func (x *Index) searchLayer(s *searcher, q []float32, ep pair, ef, l int, mode int, filter func(uint64) bool) {
	s.cand = s.cand[:0]
	s.res = s.res[:0]
	s.newEpoch(int(x.nslots.Load()))
	s.visit(ep.id)
	lb := float32(math.Inf(1))
	if x.collectable(s, ep.id, mode, filter) {
		s.res.push(ep)
		lb = ep.d
	}
	s.cand.push(ep)
	if x.quant {
		x.walkQ(s, ef, l, mode, filter, lb)
		return
	}
	stride, vecOff, dim := x.stride, x.vecOff, x.dim
	lines := (dim*4 + 63) / 64
	for len(s.cand) > 0 {
		c := s.cand.pop()
		if c.d > lb && len(s.res) >= ef {
			break
		}
		// Gather the unvisited neighbours first, so each one's vector can be
		// prefetched while the previous one is scored.
		batch := x.unvisited(s, c.id, l)
		if len(batch) == 0 {
			continue
		}
		nc := s.chunkOf(x, batch[0])
		vb := int(batch[0]&chunkMask)*stride + vecOff
		cur := nc.vecs[vb : vb+dim : vb+dim]
		if usePrefetch {
			prefetchLines(&cur[0], min(lines, 4))
		}
		for j, nb := range batch {
			next := cur
			if j+1 < len(batch) {
				nn := batch[j+1]
				nc := s.chunkOf(x, nn)
				vb := int(nn&chunkMask)*stride + vecOff
				next = nc.vecs[vb : vb+dim : vb+dim]
			}
			d := distPf(x.dotMetric, q, cur, &next[0])
			cur = next
			if len(s.res) < ef || d < lb {
				s.cand.push(pair{d, nb})
				if x.collectable(s, nb, mode, filter) {
					s.res.push(pair{d, nb})
					if len(s.res) > ef {
						s.res.pop()
					}
					lb = s.res[0].d
				}
			}
		}
	}
}

// unvisited marks the neighbours of id on layer l visited and returns, in s.batch,
// those not visited before: the expansion step of both walks (float32 and Int8).
func (x *Index) unvisited(s *searcher, id uint32, l int) []uint32 {
	var w []uint32
	var base, n int
	if l == 0 {
		w = s.chunkOf(x, id).words
		base = int(id&chunkMask) * x.stride
		n = min(int(atomic.LoadUint32(&w[base])), x.m0)
	} else {
		var off uint32
		off, w = s.upperOf(x, id)
		base = int(off&(upperChunkWords-1)) + (l-1)*x.upStr
		n = min(int(atomic.LoadUint32(&w[base])), x.m)
	}
	batch := s.batch[:0]
	for i := 1; i <= n; i++ {
		if nb := atomic.LoadUint32(&w[base+i]); !s.visit(nb) {
			batch = append(batch, nb)
		}
	}
	s.batch = batch
	s.scored += len(batch)
	return batch
}

func (x *Index) collectable(s *searcher, id uint32, mode int, filter func(uint64) bool) bool {
	c := s.chunkOf(x, id)
	base := int(id&chunkMask) * x.stride
	flags := atomic.LoadUint32(&c.words[base+x.flagOff])
	switch mode {
	case collectNotDead:
		return flags&(flagDeleted|flagFree) == 0
	case collectAny:
		return flags&(flagFree|flagCondemned) == 0
	}
	if flags != 0 {
		return false
	}
	if filter == nil {
		return true
	}
	return filter(uint64(c.words[base+x.keyOff]) | uint64(c.words[base+x.keyOff+1])<<32)
}

// Search returns the k nearest live vectors to q that pass o.Filter, closest
// first: k of them when at least k exist (and the graph reaches them).
func (x *Index) Search(q []float32, k int, o SearchOptions) ([]Result, error) {
	return x.SearchInto(nil, q, k, o)
}

// SearchInto is Search appending to dst[:0]; with a dst of capacity k it allocates
// nothing in steady state.
func (x *Index) SearchInto(dst []Result, q []float32, k int, o SearchOptions) ([]Result, error) {
	dst = dst[:0]
	if k <= 0 {
		return dst, fmt.Errorf("search: %w (got %d)", ErrInvalidK, k)
	}
	s := x.getSearcher()
	defer x.putSearcher(s)
	q, err := x.checkVector(q, s.q)
	if err != nil {
		return dst, fmt.Errorf("search: %w", err)
	}
	if x.cosine {
		s.q = q
	}
	ef := o.Ef
	if ef <= 0 {
		ef = x.cfg.EfSearch
	}
	ef = max(ef, k)

	side := x.enter()
	defer func() { x.exit(side) }()
	if x.quant {
		side = x.waitQuant(side) // a retrain rewrites the codes: not under a walk
	}
	s.refresh(x) // after enter: every slot reachable from here stays intact
	inflight := x.upsertIn.Load()
	seq := x.upsertN.Load()

	e := x.ep.Load()
	if e == 0 {
		return dst, nil
	}
	top := int(e>>32) - 1
	epID := uint32(e)
	if x.quant {
		if err := x.vf.err(); err != nil {
			return dst, fmt.Errorf("search: %w", err)
		}
		x.prepare(&s.pq, x.qp.Load(), q)
	}
	ep := pair{x.distQuery(s, q, epID), epID}
	for l := top; l > 0; l-- {
		ep = x.greedy(s, q, ep, l)
	}
	s.scored = 0
	x.searchLayer(s, q, ep, ef, 0, collectLive, o.Filter)
	if o.Filter == nil {
		x.noteWalk(s, ef) // the planner's measure of an unfiltered walk
	}
	s.out = s.res.drainAscending(s.out)

	// An upsert briefly shows a key under both its old and its new node; drop the
	// second copy when one may have overlapped this search.
	dedupe := inflight > 0 || x.upsertIn.Load() > 0 || x.upsertN.Load() != seq
	if x.quant && x.rerank.Load() {
		// With a copy to drop, k candidates may not make k results: re-rank them all.
		rk := k
		if dedupe {
			rk = 0
		}
		if err := x.rerankExact(s, q, rk); err != nil {
			return dst, fmt.Errorf("search: %w", err)
		}
	}
	for _, p := range s.out {
		if len(dst) == k {
			break
		}
		key := x.keyIn(s.tbl, p.id)
		if dedupe && containsKey(dst, key) {
			continue
		}
		if p.d < 0 && x.quant && !x.dotMetric {
			p.d = 0 // rounding of |q|^2 + |x|^2 - 2 dot; a squared distance is not negative
		}
		dst = append(dst, Result{Key: key, Distance: p.d})
	}
	return dst, nil
}

func containsKey(rs []Result, key uint64) bool {
	for _, r := range rs {
		if r.Key == key {
			return true
		}
	}
	return false
}

// enter registers a reader in the current epoch; Vacuum reuses a slot only after
// every reader registered before the slot was unlinked has exited.
func (x *Index) enter() uint64 {
	for {
		e := x.epoch.Load()
		side := e & 1
		x.readers[side].n.Add(1)
		if x.epoch.Load() == e {
			return side
		}
		x.readers[side].n.Add(-1)
	}
}

func (x *Index) exit(side uint64) { x.readers[side].n.Add(-1) }

// waitReaders flips the epoch and waits until no reader of the old epoch remains.
// Readers that register afterwards start from the graph as it is now.
func (x *Index) waitReaders() {
	old := x.epoch.Add(1) - 1
	for spins := 0; x.readers[old&1].n.Load() != 0; spins++ {
		runtime.Gosched()
	}
}

// greedyQ is greedy on Int8 codes, from the prepared query s.pq.
func (x *Index) greedyQ(s *searcher, ep pair, l int) pair {
	for changed := true; changed; {
		changed = false
		off, uw := s.upperOf(x, ep.id)
		base := int(off&(upperChunkWords-1)) + (l-1)*x.upStr
		n := min(int(atomic.LoadUint32(&uw[base])), x.m)
		if usePrefetch {
			pfOff, lines := x.qlines()
			for i := 1; i <= n; i++ {
				nb := atomic.LoadUint32(&uw[base+i])
				prefetchLines((*float32)(unsafe.Pointer(&s.chunkOf(x, nb).words[int(nb&chunkMask)*x.stride+pfOff])), lines)
			}
		}
		for i := 1; i <= n; i++ {
			nb := atomic.LoadUint32(&uw[base+i])
			if d := x.qdist(s, &s.pq, nb); d < ep.d && s.linked(x, nb) {
				ep = pair{d, nb}
				changed = true
			}
		}
	}
	return ep
}

// qlines says which lines of a node the Int8 walks read when they score it: from
// the word at pfOff (flags, then the sums beside the codes) through the last code.
func (x *Index) qlines() (pfOff, lines int) {
	first := x.flagOff * 4 / 64
	last := ((x.vecOff*4 + x.codeLen) - 1) / 64
	return x.flagOff, last - first + 1
}

// walkQ is the loop of searchLayer on Int8 codes, from the prepared query s.pq; the
// caller has seeded s.cand, s.res and lb. It is a copy of the float32 loop, not one loop
// with a branch per neighbour: that loop is the hottest code of the package, and its
// float32 form must not pay for this one.
func (x *Index) walkQ(s *searcher, ef, l int, mode int, filter func(uint64) bool, lb float32) {
	stride, vecOff, codeLen := x.stride, x.vecOff, x.codeLen
	pfOff, lines := x.qlines()
	linkLines := ((1+x.m0)*4 + 63) / 64 // count and layer-0 links
	for len(s.cand) > 0 {
		c := s.cand.pop()
		if c.d > lb && len(s.res) >= ef {
			break
		}
		batch := x.unvisited(s, c.id, l)
		if usePrefetch {
			// The words and codes a node is scored on are a few lines: fetch those of
			// the whole batch ahead, as they are scored one after another.
			for _, nb := range batch {
				prefetchLines((*float32)(unsafe.Pointer(&s.chunkOf(x, nb).words[int(nb&chunkMask)*stride+pfOff])), lines)
			}
			// And the links of the candidate likely expanded next.
			if len(s.cand) > 0 && l == 0 {
				nx := s.cand[0].id
				prefetchLines((*float32)(unsafe.Pointer(&s.chunkOf(x, nx).words[int(nx&chunkMask)*stride])), linkLines)
			}
		}
		for _, nb := range batch {
			nc := s.chunkOf(x, nb)
			nbase := int(nb&chunkMask) * stride
			cb := (nbase + vecOff) * 4
			dot := s.pq.qo + s.pq.alpha*float32(s.pq.dot(nc.codes[cb:cb+codeLen:cb+codeLen]))
			var d float32
			if x.dotMetric {
				d = 1 - dot
			} else {
				d = s.pq.qq + math.Float32frombits(nc.words[nbase+x.normOff]) - 2*dot
			}
			if len(s.res) < ef || d < lb {
				s.cand.push(pair{d, nb})
				if x.collectable(s, nb, mode, filter) {
					s.res.push(pair{d, nb})
					if len(s.res) > ef {
						s.res.pop()
					}
					lb = s.res[0].d
				}
			}
		}
	}
}

// rerankExact replaces the Int8 distances of s.out, the walk's candidates, by exact
// float32 distances of the vectors in the vector file, and sorts them again. The
// vectors are read in place (mapped) where the platform allows, each fetched into the
// caches while the one before it is measured. With k > 0 it skips, unmeasured, every
// candidate whose floor (see floorOf) shows it cannot be among the k nearest measured
// before it, and drops it: the k first are those a re-ranking of all of them gives.
func (x *Index) rerankExact(s *searcher, q []float32, k int) error {
	prune := k > 0 && len(s.out) > k
	var f floor
	if prune {
		f = x.floorOf(s)
		s.kth = s.kth[:0]
	}
	// The first line of the candidates likely measured, so that their page walks
	// overlap, then each vector in full while the one before it is measured.
	for _, p := range s.out[:min(len(s.out), max(2*k, 16))] {
		x.vf.prefetchFirst(p.id)
	}
	if len(s.out) > 0 {
		x.vf.prefetch(s.out[0].id)
	}
	// A candidate whose floor is above the k-th exact distance so far is dropped
	// unmeasured: that distance only shrinks. The scan goes on past it: a later
	// candidate, further by Int8 distance, may be much further from its decoded vector
	// (a clipped one) and so have a lower floor.
	kept := s.out[:0]
	for i, p := range s.out {
		if prune && len(s.kth) == k && f.below(p.d, x.devOf(s, p.id)) > s.kth[k-1] {
			continue
		}
		if i+1 < len(s.out) {
			x.vf.prefetch(s.out[i+1].id)
		}
		d, err := x.exactDist(s, q, p.id)
		if err != nil {
			return err
		}
		p.d = d
		kept = append(kept, p)
		if prune {
			s.kth = insertSmallest(s.kth, d, k)
		}
	}
	s.out = kept
	sortPairs(s.out)
	return nil
}

// insertSmallest adds d to ds, the at most k smallest distances so far in ascending
// order, keeping the k smallest.
func insertSmallest(ds []float32, d float32, k int) []float32 {
	i := len(ds)
	for i > 0 && ds[i-1] > d {
		i--
	}
	if i == k {
		return ds
	}
	if len(ds) < k {
		ds = append(ds, 0)
	}
	copy(ds[i+1:], ds[i:])
	ds[i] = d
	return ds
}

// floor bounds a node's exact distance from below, given its Int8 distance d to the
// prepared query and dev, the distance of its vector to its decoded one (kept beside
// the codes). The other errors are the query's rounding to u (half a step alpha per
// dimension, times codes of at most 255: dotErr), and float32 rounding of the sums
// (eps, twice dim units of the last place, of the magnitudes summed).
type floor struct {
	l2           bool
	xmax, offLen float64 // see quantParams.bounds
	qq, qn       float64 // |q|^2, |q|
	dotErr, eps  float64
}

// floorOf returns the floor of s.pq.
func (x *Index) floorOf(s *searcher) floor {
	f := floor{l2: !x.dotMetric, qq: float64(s.pq.qq), eps: float64(x.dim) * 0x1p-23}
	f.xmax, f.offLen = x.qp.Load().bounds()
	f.qn = math.Sqrt(f.qq)
	f.dotErr = 0.51 * 255 * float64(x.dim) * float64(s.pq.alpha)
	return f
}

// below returns a lower bound of the exact distance of a node whose Int8 distance is d
// and whose vector is within dev of its decoded one.
func (f floor) below(d, dev float32) float32 {
	dd := max(float64(d), 0)
	if f.l2 {
		// |q - x| >= |q - decoded x| - dev, and |q - decoded x|^2 >= d less the error
		// of the dot product (twice, in the L2 form) and of the sums, which add up
		// |q|^2, |decoded x|^2 and their dot products.
		xn := f.qn + math.Sqrt(dd+2*f.dotErr)
		slack := f.eps * (f.qq + xn*xn + 2*f.qn*xn + 2*f.qn*f.offLen)
		r := math.Sqrt(max(dd-2*f.dotErr-slack, 0)) - float64(dev)
		if r <= 0 {
			return 0
		}
		return float32(r * r * (1 - 1e-6))
	}
	// 1 - q.x >= 1 - q.(decoded x) - |q| dev.
	slack := f.eps * (f.qn*f.xmax + 2*f.qn*f.offLen + 1)
	return float32(float64(d) - f.dotErr - f.qn*float64(dev) - slack)
}

// devOf returns node id's |x - decoded x|.
func (x *Index) devOf(s *searcher, id uint32) float32 {
	return math.Float32frombits(s.chunkOf(x, id).words[int(id&chunkMask)*x.stride+x.normOff+2])
}

// exactDist is the float32 distance from q to node id (see vectorOf; s.fv is the
// buffer).
func (x *Index) exactDist(s *searcher, q []float32, id uint32) (float32, error) {
	if x.quant && cap(s.fv) < x.dim {
		s.fv = make([]float32, x.dim)
	}
	v, err := x.vectorOf(s, id, s.fv)
	if err != nil {
		return 0, err
	}
	return x.dist(q, v), nil
}

// vectorOf returns node id's float32 vector: from the vector file under Int8 (read
// into buf, of capacity dim at least, where the file is not mapped), else the node's
// own, in place.
func (x *Index) vectorOf(s *searcher, id uint32, buf []float32) ([]float32, error) {
	if x.quant {
		return x.vf.vector(id, buf)
	}
	return s.vecOf(x, id), nil
}
