package hnsw

import (
	"fmt"
	"math"
)

// Subset is the part of the index a search is confined to, such as one partition of a
// shard, described by whoever keeps track of it (the index knows only keys).
type Subset struct {
	// Len is the number of keys in the subset; it steers the plan.
	Len int
	// Keys calls yield with every key of the subset until yield returns false (the
	// exact scan). Keys the index does not hold are skipped.
	Keys func(yield func(key uint64) bool)
	// Contains reports whether key is in the subset (the walk's filter, and a check
	// on every key Keys gives); it must not call mutating methods of the index.
	Contains func(key uint64) bool
	// Plan forces a plan; PlanAuto (the zero value) lets SearchSubset choose.
	Plan Plan
}

// Plan is how SearchSubset answers a query.
type Plan uint8

const (
	// PlanAuto chooses between the two below by their estimated cost.
	PlanAuto Plan = iota
	// PlanScan computes the exact distance to every key of the subset: exact results,
	// at a cost proportional to the subset's size.
	PlanScan
	// PlanWalk walks the graph with the subset as a filter and an ef grown by the
	// share filtered out (ef / share), so that about ef admissible candidates are met.
	PlanWalk
)

func (p Plan) String() string {
	switch p {
	case PlanAuto:
		return "auto"
	case PlanScan:
		return "scan"
	case PlanWalk:
		return "walk"
	}
	return fmt.Sprintf("Plan(%d)", uint8(p))
}

// Planner constants. The walk's cost is estimated as c * ef' / share node scores: c is
// measured on this index's own unfiltered walks (nodes scored per unit of ef, a running
// average), and a filtered walk scores about 1/share nodes for each admissible one it
// keeps. The scan's cost is Len * scanCost. scanCost, the cost of one key of
// a scan against one node scored in a walk (the scan looks each key up in the key map
// and scores it; a walk scores a batch of neighbours per expansion, prefetched), was
// measured with annbench -partitions on 60000 vectors of d=784 and on 20000 of d=128.
const (
	scanCost       = 1.0
	initialPerEf   = 12.0 // before any walk was measured: about what M=16 walks show
	maxSubsetEf    = 1 << 16
	costSampleMask = 15 // every 16th walk of a searcher updates the running average
)

// SearchSubset returns the k nearest live vectors to q among sub's keys, closest first,
// and the plan that found them. Below a size where it is cheaper (estimated from the
// measured cost of this index's walks), it scans the subset exactly; above, it walks
// the graph with sub.Contains as the filter and ef raised to ef/share, share being
// sub.Len over the index's size, so a small subset is not missed by a walk that meets
// too few of its members. o.Filter is ignored. Distances are those of Search (exact
// float32 ones in a scan, also under Int8).
func (x *Index) SearchSubset(dst []Result, q []float32, k int, o SearchOptions, sub Subset) ([]Result, Plan, error) {
	dst = dst[:0]
	if k <= 0 {
		return dst, PlanAuto, fmt.Errorf("search: %w (got %d)", ErrInvalidK, k)
	}
	ef := o.Ef
	if ef <= 0 {
		ef = x.cfg.EfSearch
	}
	ef = max(ef, k)
	n := max(x.Len(), 1)
	share := min(float64(max(sub.Len, 1))/float64(n), 1)
	efWalk := int(min(math.Ceil(float64(ef)/share), maxSubsetEf))
	plan := sub.Plan
	if plan == PlanAuto {
		plan = PlanWalk
		// A filtered walk holds only admissible nodes as results, so it scores about
		// 1/share nodes for each one it keeps.
		if float64(sub.Len)*scanCost <= x.walkCost(efWalk)/share {
			plan = PlanScan
		}
	}
	if plan == PlanScan {
		res, err := x.scanSubset(dst, q, k, sub)
		return res, PlanScan, err
	}
	res, err := x.SearchInto(dst, q, k, SearchOptions{Ef: efWalk, Filter: sub.Contains})
	return res, PlanWalk, err
}

// walkCost estimates the nodes a walk at ef scores.
func (x *Index) walkCost(ef int) float64 {
	per := initialPerEf
	if b := x.perEf.Load(); b != 0 {
		per = float64(math.Float32frombits(b))
	}
	return per * float64(ef)
}

// noteWalk folds a walk's count of scored nodes into the running average of nodes
// scored per unit of ef, for one walk in costSampleMask+1 of the searcher.
func (x *Index) noteWalk(s *searcher, ef int) {
	s.walks++
	if s.walks&costSampleMask != 0 || ef <= 0 {
		return
	}
	v := float32(s.scored) / float32(ef)
	for {
		old := x.perEf.Load()
		next := v
		if old != 0 {
			next = 0.9*math.Float32frombits(old) + 0.1*v
		}
		if x.perEf.CompareAndSwap(old, math.Float32bits(next)) {
			return
		}
	}
}

// scanSubset is the exact plan: the k nearest of sub's keys by their exact distance.
func (x *Index) scanSubset(dst []Result, q []float32, k int, sub Subset) ([]Result, error) {
	s := x.getSearcher()
	defer x.putSearcher(s)
	q, err := x.checkVector(q, s.q)
	if err != nil {
		return dst, fmt.Errorf("search: %w", err)
	}
	if x.cosine {
		s.q = q
	}
	side := x.enter()
	defer func() { x.exit(side) }()
	if x.quant {
		side = x.waitQuant(side)
		if err := x.vf.err(); err != nil {
			return dst, fmt.Errorf("search: %w", err)
		}
	}
	s.refresh(x)
	s.res = s.res[:0]
	// Keys are looked up in blocks, each under one read lock of the key map: a node
	// found there is live, and stays readable while this search is registered (Vacuum
	// waits for it before reusing the slot).
	const block = 256
	ids := s.batch[:0]
	var ioErr error
	flush := func() {
		for _, id := range ids {
			d, err := x.exactDist(s, q, id)
			if err != nil {
				ioErr = err
				return
			}
			if len(s.res) < k || d < s.res[0].d {
				s.res.push(pair{d, id})
				if len(s.res) > k {
					s.res.pop()
				}
			}
		}
		ids = ids[:0]
	}
	var keys [block]uint64
	nk := 0
	lookup := func() {
		x.keysMu.RLock()
		for _, key := range keys[:nk] {
			if id, ok := x.keys[key]; ok {
				ids = append(ids, id)
			}
		}
		x.keysMu.RUnlock()
		nk = 0
		flush()
	}
	sub.Keys(func(key uint64) bool {
		if sub.Contains != nil && !sub.Contains(key) {
			return true
		}
		keys[nk] = key
		if nk++; nk == block {
			lookup()
		}
		return ioErr == nil
	})
	if nk > 0 && ioErr == nil {
		lookup()
	}
	s.batch = ids
	if ioErr != nil {
		return dst, fmt.Errorf("search: %w", ioErr)
	}
	s.out = s.res.drainAscending(s.out)
	for _, p := range s.out {
		dst = append(dst, Result{Key: x.keyIn(s.tbl, p.id), Distance: p.d})
	}
	return dst, nil
}
