package hnsw

import (
	"fmt"
	"sync/atomic"
)

// Delete removes key. Its node becomes a tombstone: searches still walk through it
// but never return it. Once tombstones reach a quarter of the live vectors (and at
// least vacuumMin), Delete starts a Vacuum in the background, so a long
// insert/delete churn neither grows memory without bound nor degrades recall, and
// no write waits for it.
func (x *Index) Delete(key uint64) error {
	if err := x.tombstone(key); err != nil {
		return err
	}
	x.maybeVacuum()
	return nil
}

// maybeVacuum starts a background Vacuum when tombstones cross the threshold and
// none is running.
func (x *Index) maybeVacuum() {
	if d := x.deleted.Load(); d < vacuumMin || d*4 < x.live.Load() {
		return
	}
	if x.vacuuming.CompareAndSwap(false, true) {
		go func() {
			defer x.vacuuming.Store(false)
			x.Vacuum()
		}()
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
	if x.markDeleted(*x.chunks.Load(), id) {
		x.deleted.Add(1)
	}
	x.live.Add(-1)
	return nil
}

// Vacuum unlinks the tombstones present when it starts from the graph and puts
// their slots on the free list for Add to reuse. Each live node that links to a
// tombstone gets its list rebuilt with the heuristic from its surviving neighbours
// plus the neighbours of its deleted ones (hnswlib's repair), so the graph stays
// navigable. It runs beside Add, Delete and searches, in steps:
//
//  1. condemn: mark the tombstones it will free (flagCondemned), and move the entry
//     point off them. From then on no new link points to them: construction never
//     collects a tombstone except as a last resort, which excludes condemned ones.
//  2. wait out every reader and insert that started before (the epoch scheme):
//     an insert in flight may have picked a condemned node as a neighbour while it
//     was still live, and would link to it.
//  3. repair every node that links to a condemned one (live nodes, and tombstones
//     deleted since step 1, which searches still walk through), under that node's
//     lock as any link change.
//  4. wait out readers again (one may have loaded a link to a condemned node before
//     its list was repaired), then free the slots, unless an image is being
//     written (Freeze), which it waits for.
//
// One Vacuum runs at a time; a call while another runs waits for it and then does
// its own pass.
func (x *Index) Vacuum() {
	x.vacMu.Lock()
	defer x.vacMu.Unlock()
	if x.deleted.Load() == 0 {
		return
	}
	s := x.getSearcher()
	defer x.putSearcher(s)
	n := x.nslots.Load()
	s.refresh(x) // covers every slot below n
	tbl := s.tbl

	var dels []uint32
	for id := range n {
		if f := x.flagsIn(tbl, id); f&flagDeleted != 0 && f&flagFree == 0 {
			dels = append(dels, id)
		}
	}
	if len(dels) == 0 {
		return
	}
	for _, id := range dels {
		x.setFlag(tbl, id, flagCondemned)
	}
	x.moveEntryPoint(s)
	x.waitReaders()

	s.refresh(x)
	for id := range min(x.nslots.Load(), uint32(len(s.tbl))*chunkSize) {
		// Tombstones deleted since the scan are repaired too: searches still walk
		// through them, so they must not keep links to slots about to be freed.
		if x.flagsIn(s.tbl, id)&(flagCondemned|flagFree) != 0 {
			continue
		}
		for l := x.levelIn(s.tbl, id); l >= 0; l-- {
			x.repair(s, id, l)
		}
	}

	if testHookVacuumRepaired != nil {
		testHookVacuumRepaired()
	}
	x.waitReaders()
	x.imgMu.Lock()
	defer x.imgMu.Unlock()
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

// testHookVacuumRepaired, when set by a test, runs after the repair pass of Vacuum.
var testHookVacuumRepaired func()

// moveEntryPoint makes a live node of the highest level the entry point if the
// current one is a tombstone, or clears it when no live node is left, so that no
// walk starts at a node Vacuum is about to free. Inserts that raise the level set
// the entry point under the same lock.
func (x *Index) moveEntryPoint(s *searcher) {
	for {
		e := x.ep.Load()
		if e == 0 || s.flagsOf(x, uint32(e))&flagDeleted == 0 {
			return
		}
		s.refresh(x)
		best, bestLevel, linked := uint32(0), -1, false
		for id := range min(x.nslots.Load(), uint32(len(s.tbl))*chunkSize) {
			if x.flagsIn(s.tbl, id)&(flagDeleted|flagFree) != 0 {
				continue
			}
			// Prefer nodes whose insert is done (see linked): a node still being
			// inserted would give searches from it nowhere to go.
			lv := x.levelIn(s.tbl, id)
			done := s.linked(x, id)
			if (done && !linked) || (done == linked && lv > bestLevel) {
				best, bestLevel, linked = id, lv, done
			}
		}
		x.epMu.Lock()
		switch {
		case x.ep.Load() != e:
			// An insert raised the level meanwhile: look again.
		case bestLevel < 0:
			x.ep.Store(0)
			x.epMu.Unlock()
			return
		case x.flagsIn(s.tbl, best)&flagDeleted == 0:
			x.ep.Store(uint64(bestLevel+1)<<32 | uint64(best))
			x.epMu.Unlock()
			return
		}
		// Otherwise the chosen node was deleted meanwhile: choose again.
		x.epMu.Unlock()
	}
}

// repair replaces the tombstones in id's list on layer l. Live neighbours are
// kept: rebuilding the whole list would drop edges the heuristic chose before, and
// over many vacuums nodes would lose their in-links and drift out of reach. The
// freed places go to the neighbours of the deleted nodes (hnswlib's repair
// candidates), closest first, each admitted by the heuristic against what is
// already kept; where those neighbours are tombstones too, the live nodes past
// them (breadth first through tombstones, until maxM are found), so that a chain
// of tombstones never leaves the nodes beyond it unreachable. The list is rewritten under id's lock, as inserts change lists.
func (x *Index) repair(s *searcher, id uint32, l int) {
	dead := func(nb uint32) bool { return s.flagsOf(x, nb)&flagDeleted != 0 }
	w, base := x.listOf(s, id, l)
	hasDead := false
	for i := 1; i <= int(atomic.LoadUint32(&w[base])); i++ {
		if dead(atomic.LoadUint32(&w[base+i])) {
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
	mu := &s.chunkOf(x, id).locks[id&chunkMask]
	mu.Lock()
	x.preserveLinks(s, id)
	n := int(w[base]) // stable: writers hold the lock
	x.from(s, &s.fn, id)
	s.newEpoch(int(x.nslots.Load()))
	s.visit(id)
	kept := s.kept[:0]
	for i := 1; i <= n; i++ {
		if nb := w[base+i]; !dead(nb) {
			s.visit(nb)
			kept = append(kept, pair{x.distTo(s, &s.fn, nb), nb})
		}
	}
	live := len(kept)
	cands := s.out[:0]
	// The tombstones to look through: id's own first, then, while fewer than maxM
	// live candidates are found, the tombstones they link to, breadth first. One
	// level is not enough: keys rewritten again and again with a vector that drifts
	// away from the other data leave a chain of tombstones (each new node links to
	// its predecessor, which the next rewrite deletes), and the live nodes at its
	// far end are reachable only through the whole chain. Stopping at one level
	// would cut them off the graph.
	queue := s.batch[:0]
	for i := 1; i <= n; i++ {
		if nb := w[base+i]; dead(nb) && !s.visit(nb) {
			queue = append(queue, nb)
		}
	}
	direct := len(queue)
	for qi := 0; qi < len(queue) && (qi < direct || len(cands) < maxM); qi++ {
		// A tombstone's list may still change (an insert in flight when it was
		// deleted), so it is read as searches read lists.
		dw, db := x.listOf(s, queue[qi], l)
		for j := 1; j <= min(int(atomic.LoadUint32(&dw[db])), maxM); j++ {
			c := atomic.LoadUint32(&dw[db+j])
			if s.visit(c) {
				continue
			}
			if dead(c) {
				queue = append(queue, c)
			} else {
				cands = append(cands, pair{x.distTo(s, &s.fn, c), c})
			}
		}
	}
	s.batch = queue
	sortPairs(cands)
	kept = x.heuristic(s, cands, maxM, kept)
	storeLinks(w, base, kept)
	mu.Unlock()
	s.out, s.kept = cands, kept
	if dead(id) {
		// A tombstone only needs its own list fixed: no node should gain a link
		// to it.
		return
	}
	// The new neighbours link back, as on insert, which restores in-links that
	// the deleted nodes took with them.
	s.back = append(s.back[:0], kept[live:]...)
	for _, p := range s.back {
		x.addBackLink(s, p.id, id, l, maxM)
	}
}
