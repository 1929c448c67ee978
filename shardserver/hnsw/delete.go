package hnsw

import (
	"fmt"
	"sync/atomic"
)

// Delete removes key. Its node becomes a tombstone: searches still walk through it
// but never return it. Once tombstones reach a quarter of the live vectors (and at
// least vacuumMin), Delete runs Vacuum, so a long insert/delete churn neither
// grows memory without bound nor degrades recall.
func (x *Index) Delete(key uint64) error {
	if err := x.tombstone(key); err != nil {
		return err
	}
	x.maybeVacuum()
	return nil
}

func (x *Index) maybeVacuum() {
	if d := x.deleted.Load(); d >= vacuumMin && d*4 >= x.live.Load() {
		x.Vacuum()
	}
}

// vacuumMin is the fewest tombstones worth a Vacuum on Delete: a pass scans every
// node, so it is amortised over at least this many deletes.
const vacuumMin = 256

func (x *Index) tombstone(key uint64) error {
	kl := x.keyLock(key)
	kl.Lock()
	defer kl.Unlock()
	x.structMu.RLock()
	defer x.structMu.RUnlock()
	x.keysMu.Lock()
	id, ok := x.keys[key]
	if ok {
		delete(x.keys, key)
	}
	x.keysMu.Unlock()
	if !ok {
		return fmt.Errorf("delete key %d: %w", key, ErrNotFound)
	}
	if x.setFlag(*x.chunks.Load(), id, flagDeleted) {
		x.deleted.Add(1)
	}
	x.live.Add(-1)
	return nil
}

// Vacuum unlinks every tombstone from the graph and puts its slot on the free
// list for Add to reuse. Each live node that links to a tombstone gets its list
// rebuilt with the heuristic from its surviving neighbours plus the neighbours of
// its deleted ones (hnswlib's repair), so the graph stays navigable. Add and
// Delete wait while it runs; searches do not, and a slot is reused only after
// every search that might have reached it has finished.
func (x *Index) Vacuum() {
	x.vacMu.Lock()
	defer x.vacMu.Unlock()
	x.structMu.Lock()
	defer x.structMu.Unlock()
	if x.deleted.Load() == 0 {
		return
	}
	s := x.getSearcher()
	defer x.putSearcher(s)
	n := x.nslots.Load()
	tbl := s.tbl
	dead := func(id uint32) bool { return x.flagsIn(tbl, id)&flagDeleted != 0 }

	// New entry point first, so no search starts from a node being unlinked.
	bestID, bestLevel := uint32(0), -1
	for id := range n {
		if f := x.flagsIn(tbl, id); f&(flagDeleted|flagFree) == 0 {
			if lv := x.levelIn(tbl, id); lv > bestLevel {
				bestID, bestLevel = id, lv
			}
		}
	}
	if bestLevel < 0 {
		x.ep.Store(0)
	} else if e := x.ep.Load(); e == 0 || dead(uint32(e)) {
		x.ep.Store(uint64(bestLevel+1)<<32 | uint64(bestID))
	}

	var dels []uint32
	for id := range n {
		f := x.flagsIn(tbl, id)
		if f&flagFree != 0 {
			continue
		}
		if f&flagDeleted != 0 {
			dels = append(dels, id)
			continue
		}
		for l := x.levelIn(tbl, id); l >= 0; l-- {
			x.repair(s, id, l, dead)
		}
	}

	x.waitReaders()
	for _, id := range dels {
		w := tbl[id>>chunkBits].words
		base := int(id&chunkMask) * x.stride
		atomic.StoreUint32(&w[base+x.flagOff], flagFree)
		atomic.StoreUint32(&w[base], 0)
	}
	x.growMu.Lock()
	x.free = append(x.free, dels...)
	x.growMu.Unlock()
	x.deleted.Add(-int64(len(dels)))
}

// repair replaces the tombstones in id's list on layer l. Live neighbours are
// kept: rebuilding the whole list would drop edges the heuristic chose before, and
// over many vacuums nodes would lose their in-links and drift out of reach. The
// freed places go to the neighbours of the deleted nodes (hnswlib's repair
// candidates), closest first, each admitted by the heuristic against what is
// already kept.
func (x *Index) repair(s *searcher, id uint32, l int, dead func(uint32) bool) {
	w, base := x.listOf(s, id, l)
	n := int(w[base])
	hasDead := false
	for i := 1; i <= n; i++ {
		if dead(w[base+i]) {
			hasDead = true
			break
		}
	}
	if !hasDead {
		return
	}
	maxM := x.m
	if l == 0 {
		maxM = x.m0
	}
	v := x.vecIn(s.tbl, id)
	s.newEpoch(int(x.nslots.Load()))
	s.visit(id)
	kept := s.kept[:0]
	for i := 1; i <= n; i++ {
		if nb := w[base+i]; !dead(nb) {
			s.visit(nb)
			kept = append(kept, pair{x.dist(v, x.vecIn(s.tbl, nb)), nb})
		}
	}
	live := len(kept)
	cands := s.out[:0]
	for i := 1; i <= n; i++ {
		nb := w[base+i]
		if !dead(nb) {
			continue
		}
		dw, db := x.listOf(s, nb, l)
		for j := 1; j <= int(dw[db]); j++ {
			if c := dw[db+j]; !dead(c) && !s.visit(c) {
				cands = append(cands, pair{x.dist(v, x.vecIn(s.tbl, c)), c})
			}
		}
	}
	sortPairs(cands)
	kept = x.heuristic(s, cands, maxM, kept)
	storeLinks(w, base, kept)
	// The new neighbours link back, as on insert, which restores in-links that
	// the deleted nodes took with them.
	s.out, s.kept = cands, kept
	s.back = append(s.back[:0], kept[live:]...)
	for _, p := range s.back {
		x.addBackLink(s, p.id, id, l, maxM)
	}
}
