package hnsw

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
)

// Add inserts vec under key, or replaces the vector of an existing key. vec is
// copied (and normalised under Cosine). Concurrent Adds run in parallel: each locks
// only the nodes whose link lists it rewrites.
//
// A replaced vector goes into a fresh slot, which is published before the old slot
// is tombstoned, so a concurrent search sees the old or the new vector, never a
// mix of the two.
//
// An upsert leaves a tombstone like Delete does, and triggers Vacuum the same way.
func (x *Index) Add(key uint64, vec []float32) error {
	upsert, err := x.add(key, vec)
	if err != nil {
		return err
	}
	if x.quant && isRetrainPoint(x.adds.Add(1)) {
		if err := x.maybeRetrain(); err != nil {
			return fmt.Errorf("add key %d: %w", key, err)
		}
	}
	if upsert {
		x.maybeVacuum()
	}
	return nil
}

func (x *Index) add(key uint64, vec []float32) (upsert bool, err error) {
	s := x.getSearcher()
	defer x.putSearcher(s)
	v, err := x.checkVector(vec, s.q)
	if err != nil {
		return false, fmt.Errorf("add key %d: %w", key, err)
	}
	if x.cosine {
		s.q = v
	}
	kl := x.keyLock(key)
	kl.Lock()
	defer kl.Unlock()
	x.structMu.RLock()
	defer x.structMu.RUnlock()

	x.keysMu.RLock()
	old, exists := x.keys[key]
	x.keysMu.RUnlock()
	var flags uint32
	if exists {
		flags = flagPending
	}
	level := x.randomLevel()
	if x.quant {
		if err := x.vf.err(); err != nil {
			return false, fmt.Errorf("add key %d: %w", key, err)
		}
		x.observe(v)
	}
	id := x.allocSlot(key, v, level, flags)
	if x.quant {
		if err := x.vf.write(id, v); err != nil {
			x.releaseSlot(id)
			return false, fmt.Errorf("add key %d: %w", key, err)
		}
	}
	x.insert(s, id, v, level)

	x.keysMu.Lock()
	x.keys[key] = id
	x.keysMu.Unlock()
	if exists {
		x.upsertIn.Add(1)
		x.clearFlag(s.tbl, id, flagPending)
		if x.markDeleted(s.tbl, old) {
			x.deleted.Add(1)
		}
		x.upsertN.Add(1)
		x.upsertIn.Add(-1)
	} else {
		x.live.Add(1)
	}
	return exists, nil
}

// insert links node id (its vector v, its level) into the graph: the paper's
// INSERT with hnswlib's choices (heuristic selection of M neighbours, back-links
// pruned by the same heuristic down to M, or 2*M on layer 0).
func (x *Index) insert(s *searcher, id uint32, v []float32, level int) {
	for {
		// An insert walks the graph like a search: registered as a reader, no
		// slot it may reach is freed and reused by a concurrent Vacuum under it.
		side := x.enter()
		s.refresh(x)
		done := x.insertFrom(s, id, v, level)
		x.exit(side)
		if done {
			return
		}
		// Nothing but condemned tombstones in reach: a running Vacuum is moving
		// the entry point off them (and waits for this attempt to end).
		runtime.Gosched()
	}
}

// insertFrom is one attempt of insert from the current entry point; it reports
// false when the walk of layer 0 found no node a link may point to.
func (x *Index) insertFrom(s *searcher, id uint32, v []float32, level int) bool {
	e := x.ep.Load()
	if e == 0 {
		x.epMu.Lock()
		if e = x.ep.Load(); e == 0 {
			x.ep.Store(uint64(level+1)<<32 | uint64(id))
			x.epMu.Unlock()
			return true
		}
		x.epMu.Unlock()
	}
	top := int(e>>32) - 1
	epID := uint32(e)
	if x.quant {
		x.prepare(&s.pq, x.qp.Load(), v)
	}
	ep := pair{x.distQuery(s, v, epID), epID}
	for l := top; l > level; l-- {
		ep = x.greedy(s, v, ep, l)
	}
	for l := min(level, top); l >= 0; l-- {
		x.searchLayer(s, v, ep, x.cfg.EfConstruction, l, collectNotDead, nil)
		if len(s.res) == 0 {
			// Only tombstones in reach (say, everything was deleted and not yet
			// vacuumed): link to them rather than to nothing, or the new node
			// would be unreachable. Vacuum later rewires it.
			x.searchLayer(s, v, ep, x.cfg.EfConstruction, l, collectAny, nil)
		}
		s.tmp = s.res.drainAscending(s.tmp)
		if len(s.tmp) == 0 {
			// Not even a tombstone that may be linked to: everything this walk
			// reaches on the layer is condemned by a running Vacuum (the descent
			// went through links it has not repaired yet). Go on down without
			// links here; on layer 0 give up this attempt (links set on higher
			// layers stay, and the next attempt merges into them).
			if l == 0 {
				return false
			}
			continue
		}
		ep = s.tmp[0]
		if len(s.tmp) < x.m {
			// As hnswlib: with fewer candidates than M, keep them all.
			s.kept = append(s.kept[:0], s.tmp...)
		} else {
			s.kept = x.heuristic(s, s.tmp, x.m, s.kept[:0])
		}
		maxM := x.m
		if l == 0 {
			maxM = x.m0
		}
		x.setLinks(s, id, l, maxM, s.kept)
		for _, nb := range s.kept {
			x.addBackLink(s, nb.id, id, l, maxM)
		}
	}
	if level > top {
		x.epMu.Lock()
		if cur := x.ep.Load(); int(cur>>32)-1 < level {
			x.ep.Store(uint64(level+1)<<32 | uint64(id))
		}
		x.epMu.Unlock()
	}
	return true
}

// heuristic is the paper's SELECT-NEIGHBORS-HEURISTIC as hnswlib implements it:
// walking cands closest first, keep a candidate only if it is closer to the new
// node than to every neighbour already kept. This spreads links over directions
// and keeps clusters connected. cands must be sorted ascending; kept is appended.
func (x *Index) heuristic(s *searcher, cands []pair, m int, kept []pair) []pair {
	for _, c := range cands {
		if len(kept) >= m {
			break
		}
		if len(kept) > 0 {
			x.from(s, &s.fc, c.id)
		}
		good := true
		for _, r := range kept {
			if x.distTo(s, &s.fc, r.id) < c.d {
				good = false
				break
			}
		}
		if good {
			kept = append(kept, c)
		}
	}
	return kept
}

// listOf returns the words and base index of id's list on layer l.
func (x *Index) listOf(s *searcher, id uint32, l int) ([]uint32, int) {
	if l == 0 {
		return s.chunkOf(x, id).words, int(id&chunkMask) * x.stride
	}
	off, uw := s.upperOf(x, id)
	return uw, int(off&(upperChunkWords-1)) + (l-1)*x.upStr
}

// setLinks sets the new node id's list on layer l. The list is normally empty,
// but a concurrent insert that reached id through a higher layer may already have
// added a back-link to it; those links are merged in (pruned by the heuristic if
// there are too many) rather than overwritten, so no insert loses its in-link.
// Words are stored atomically, ids before the count, so a lock-free reader sees
// valid node ids whatever it interleaves with.
func (x *Index) setLinks(s *searcher, id uint32, l, maxM int, links []pair) {
	mu := &s.chunkOf(x, id).locks[id&chunkMask]
	mu.Lock()
	defer mu.Unlock()
	w, base := x.listOf(s, id, l)
	if n := int(w[base]); n > 0 {
		x.from(s, &s.fn, id)
		merged := append(s.back[:0], links...)
		for i := 1; i <= n; i++ {
			o := w[base+i]
			if !slices.ContainsFunc(merged, func(p pair) bool { return p.id == o }) {
				merged = append(merged, pair{x.distTo(s, &s.fn, o), o})
			}
		}
		s.back = merged
		links = merged
		if len(merged) > maxM {
			sortPairs(merged)
			links = x.heuristic(s, merged, maxM, s.tmp[:0])
			s.tmp = links
		}
	}
	storeLinks(w, base, links)
}

// storeLinks writes links as the list at w[base]: ids first, then the count, each
// stored atomically, so a lock-free reader sees valid node ids whatever it
// interleaves with. The caller serialises writers of the list (the node's lock, or
// Vacuum's exclusive structMu).
func storeLinks(w []uint32, base int, links []pair) {
	for i, p := range links {
		atomic.StoreUint32(&w[base+1+i], p.id)
	}
	atomic.StoreUint32(&w[base], uint32(len(links)))
}

// addBackLink adds a link nb -> id on layer l, pruning nb's list with the
// heuristic (tombstones dropped first) when it is full.
func (x *Index) addBackLink(s *searcher, nb, id uint32, l, maxM int) {
	mu := &s.chunkOf(x, nb).locks[nb&chunkMask]
	mu.Lock()
	defer mu.Unlock()
	w, base := x.listOf(s, nb, l)
	n := int(w[base]) // stable: writers hold the lock
	for i := 1; i <= n; i++ {
		if w[base+i] == id {
			return
		}
	}
	x.preserveLinks(s, nb)
	if n < maxM {
		atomic.StoreUint32(&w[base+1+n], id)
		atomic.StoreUint32(&w[base], uint32(n+1))
		return
	}
	x.from(s, &s.fn, nb)
	cands := s.out[:0]
	cands = append(cands, pair{x.distTo(s, &s.fn, id), id})
	for i := 1; i <= n; i++ {
		o := w[base+i]
		// Tombstones give up their place: new nodes never link to them, so a
		// live node pruned in favour of one could be left with no way in.
		if s.flagsOf(x, o)&flagDeleted != 0 {
			continue
		}
		cands = append(cands, pair{x.distTo(s, &s.fn, o), o})
	}
	sortPairs(cands)
	kept := x.heuristic(s, cands, maxM, s.tmp[:0])
	storeLinks(w, base, kept)
	s.out, s.tmp = cands, kept
}

// sortPairs sorts by ascending distance: insertion sort for the short lists of
// back-link pruning, pdqsort for the long candidate sets of a repair.
func sortPairs(p []pair) {
	if len(p) > 48 {
		slices.SortFunc(p, func(a, b pair) int { return cmp.Compare(a.d, b.d) })
		return
	}
	for i := 1; i < len(p); i++ {
		v := p[i]
		j := i - 1
		for ; j >= 0 && p[j].d > v.d; j-- {
			p[j+1] = p[j]
		}
		p[j+1] = v
	}
}
