package shard

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/annshard/annshard/shardserver/hnsw"
)

// The tail holds the vectors the store has applied (they are in the WAL and in the id
// maps) that the HNSW graph does not have yet. Searches scan it exactly beside the graph
// walk, and gets read it first, so a write is visible from the moment it is applied,
// whether or not its graph insert is done.
//
// Writers insert their own vectors into the graph before they answer, so in steady state
// the tail holds only the writes in flight. After a restart it holds what the WAL replay
// applied (replay only decodes records: the cost of a graph insert is paid afterwards),
// and a background drain inserts it on every core while the shard already serves. That
// is what bounds the time to ready after a crash by the time to read the snapshot and
// the WAL after it, not by the graph's insert rate.
//
// Rules that keep every acknowledged write visible:
//   - an entry is marked done only after the graph has its vector (Index.Add returned),
//     or once a newer write of the key (an upsert or a delete) was applied;
//   - a search scans the tail before it walks the graph: an entry it sees as done is
//     already in the graph when the walk starts;
//   - a key whose pending vector replaces one the graph may still hold is marked stale,
//     and the walk filters it out, so a search never answers with the older vector of
//     a key written before it started.
//
// Concurrency: put, remove, indexed and snapshots of the pending set take mu; scans and
// stale checks take no lock (the log is published entry by entry, the stale bits are
// atomic words).
type tail struct {
	mu      sync.RWMutex
	pending map[uint64]*tailEntry // key -> its newest vector the graph lacks
	log     atomic.Pointer[tailLog]
	stale   atomic.Pointer[[]uint64] // bit per key: the graph may hold an older vector of it
	nstale  atomic.Int64
	size    atomic.Int64 // len(pending)
}

// tailEntry is one applied vector of a key.
type tailEntry struct {
	key  uint64
	seq  uint64      // of the record that wrote it (for errors)
	raw  []float32   // as written: what the graph insert is given
	vec  []float32   // as the index compares it (normalised under Cosine; raw otherwise)
	done atomic.Bool // in the graph, superseded or deleted: scans skip it
}

// tailLog is the append-only list that scans read: entries [0, n) of *ents are
// published, each written before n covers it. *ents has its full capacity as length;
// a full one is replaced by a copy twice as long.
type tailLog struct {
	ents atomic.Pointer[[]*tailEntry]
	n    atomic.Int64
}

// tailPut is one vector to add: stale says the graph may hold an older vector of key.
type tailPut struct {
	key, seq uint64
	raw, vec []float32
	stale    bool
}

// tailCompactSlack is how many done entries the log may hold beyond the pending ones
// before put rebuilds it.
const tailCompactSlack = 1024

func newTail() *tail {
	t := &tail{pending: map[uint64]*tailEntry{}}
	t.log.Store(newTailLog(nil))
	t.stale.Store(&[]uint64{})
	return t
}

func newTailLog(from []*tailEntry) *tailLog {
	lg := &tailLog{}
	ents := make([]*tailEntry, max(64, 2*len(from)))
	copy(ents, from)
	lg.ents.Store(&ents)
	lg.n.Store(int64(len(from)))
	return lg
}

// append publishes e; the caller holds the tail's write lock.
func (lg *tailLog) append(e *tailEntry) {
	ents := *lg.ents.Load()
	n := int(lg.n.Load())
	if n == len(ents) {
		// Readers load n before the slice, so the longer slice is stored first.
		grown := make([]*tailEntry, 2*n)
		copy(grown, ents)
		ents = grown
		lg.ents.Store(&ents)
	}
	ents[n] = e
	lg.n.Store(int64(n + 1))
}

// entries returns the published entries.
func (lg *tailLog) entries() []*tailEntry {
	n := lg.n.Load()
	return (*lg.ents.Load())[:n]
}

// Len is the number of keys whose vector the graph lacks.
func (t *tail) Len() int64 { return t.size.Load() }

// put applies vectors in order: each becomes its key's pending entry, and a pending
// entry it replaces is done. It returns the new entries.
func (t *tail) put(items []tailPut) []*tailEntry {
	out := make([]*tailEntry, len(items))
	t.mu.Lock()
	defer t.mu.Unlock()
	lg := t.log.Load()
	for i, it := range items {
		e := &tailEntry{key: it.key, seq: it.seq, raw: it.raw, vec: it.vec}
		if old := t.pending[it.key]; old != nil {
			old.done.Store(true)
		}
		t.pending[it.key] = e
		if it.stale {
			t.setStale(it.key, true)
		}
		lg.append(e)
		out[i] = e
	}
	t.size.Store(int64(len(t.pending)))
	if n := len(lg.entries()); n > 2*len(t.pending)+tailCompactSlack {
		t.compactLocked()
	}
	return out
}

// compactLocked replaces the log by one of the pending entries only, in log order.
func (t *tail) compactLocked() {
	var keep []*tailEntry
	for _, e := range t.log.Load().entries() {
		if !e.done.Load() && t.pending[e.key] == e {
			keep = append(keep, e)
		}
	}
	t.log.Store(newTailLog(keep))
}

// remove drops key's pending vector, the key being deleted, and reports whether it
// had one.
func (t *tail) remove(key uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.pending[key]
	if e != nil {
		t.dropLocked(e)
	}
	return e != nil
}

func (t *tail) dropLocked(e *tailEntry) {
	e.done.Store(true)
	delete(t.pending, e.key)
	t.setStale(e.key, false)
	t.size.Store(int64(len(t.pending)))
}

// current reports whether e is still its key's pending vector.
func (t *tail) current(e *tailEntry) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.pending[e.key] == e
}

// indexed records that the graph has e's vector now; if a newer vector of the key was
// applied meanwhile, that one stays pending (and the key stale).
func (t *tail) indexed(e *tailEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending[e.key] == e {
		t.dropLocked(e)
	}
}

// get returns key's pending vector (as the index compares it), if there is one.
func (t *tail) get(key uint64) ([]float32, bool) {
	if t.size.Load() == 0 {
		return nil, false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if e := t.pending[key]; e != nil {
		return e.vec, true
	}
	return nil, false
}

// pendingEntries returns the pending entries in the order they were applied.
func (t *tail) pendingEntries() []*tailEntry {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]*tailEntry, 0, len(t.pending))
	for _, e := range t.log.Load().entries() {
		if t.pending[e.key] == e {
			out = append(out, e)
		}
	}
	return out
}

// setStale sets or clears key's stale bit; the caller holds the write lock.
func (t *tail) setStale(key uint64, on bool) {
	bits := *t.stale.Load()
	w := int(key / 64)
	if w >= len(bits) {
		if !on {
			return
		}
		// Readers of the old slice see no bit for keys beyond it: such a key was
		// written after their search began.
		grown := make([]uint64, max(w+1, 2*len(bits)))
		for i := range bits {
			grown[i] = atomic.LoadUint64(&bits[i])
		}
		bits = grown
		t.stale.Store(&bits)
	}
	old := atomic.LoadUint64(&bits[w])
	mask := uint64(1) << (key % 64)
	switch {
	case on && old&mask == 0:
		atomic.StoreUint64(&bits[w], old|mask)
		t.nstale.Add(1)
	case !on && old&mask != 0:
		atomic.StoreUint64(&bits[w], old&^mask)
		t.nstale.Add(-1)
	}
}

// staleFilter returns a filter that passes the keys whose graph vector is current, or
// nil when every key's is.
func (t *tail) staleFilter() func(uint64) bool {
	if t.nstale.Load() == 0 {
		return nil
	}
	bits := *t.stale.Load()
	return func(key uint64) bool {
		w := key / 64
		return w >= uint64(len(bits)) || atomic.LoadUint64(&bits[w])&(1<<(key%64)) == 0
	}
}

// scan returns the k pending vectors closest to q (prepared as the index compares
// vectors) among the keys keep passes (keep may be nil), closest first.
func (t *tail) scan(q []float32, k int, keep func(uint64) bool, dist func(a, b []float32) float32) []hnsw.Result {
	if t.size.Load() == 0 {
		return nil
	}
	var top []hnsw.Result // ascending, at most k
	for _, e := range t.log.Load().entries() {
		if e.done.Load() || (keep != nil && !keep(e.key)) {
			continue
		}
		d := dist(q, e.vec)
		if len(top) == k && d >= top[k-1].Distance {
			continue
		}
		i, _ := slices.BinarySearchFunc(top, d, func(r hnsw.Result, d float32) int {
			if r.Distance <= d {
				return -1
			}
			return 1
		})
		if len(top) == k {
			top = top[:k-1]
		}
		top = slices.Insert(top, i, hnsw.Result{Key: e.key, Distance: d})
	}
	return top
}

// mergeResults merges the tail's and the graph's answers, both ascending, into the k
// closest, each key once: the tail's entry wins, as the graph may hold an older vector.
func mergeResults(fromTail, fromGraph []hnsw.Result, k int) []hnsw.Result {
	if len(fromTail) == 0 {
		return fromGraph
	}
	out := make([]hnsw.Result, 0, min(k, len(fromTail)+len(fromGraph)))
	inTail := func(key uint64) bool {
		return slices.ContainsFunc(fromTail, func(r hnsw.Result) bool { return r.Key == key })
	}
	i, j := 0, 0
	for len(out) < k && (i < len(fromTail) || j < len(fromGraph)) {
		if j < len(fromGraph) && inTail(fromGraph[j].Key) {
			j++
			continue
		}
		if j == len(fromGraph) || (i < len(fromTail) && fromTail[i].Distance <= fromGraph[j].Distance) {
			out = append(out, fromTail[i])
			i++
		} else {
			out = append(out, fromGraph[j])
			j++
		}
	}
	return out
}
