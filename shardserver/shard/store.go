package shard

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/slots"
	"github.com/annshard/annshard/shardserver/wal"
)

// errBroken is returned for every request after the WAL failed or the index refused a
// record the WAL already holds: the in-memory state can no longer be trusted to follow
// the log, so the shard stops serving (writes, reads and readiness) until it restarts
// and rebuilds the state from the log.
var errBroken = errors.New("the shard stopped serving; restart it to rebuild its state from the write-ahead log")

// Causes of a breakage (the cause label of annshard_shard_broken).
const (
	brokenWAL   = "wal"
	brokenIndex = "index"
)

// breakage is why a Store stopped serving. seq is the record whose apply failed (cause
// index), or 0 when unknown (cause wal).
type breakage struct {
	cause string
	seq   uint64
	err   error
}

// errGap is returned when a replicated record does not follow the last applied one.
var errGap = errors.New("replicated record out of order")

const snapshotMagic = "ANNSHRD1"

// entry is the metadata of one index key. Keys are dense and assigned in WAL order
// (len(entries) at the time of the first upsert of an id), so every replica that applies
// the same records assigns the same keys; a deleted key is never reused.
type entry struct {
	id   string
	part uint32 // index into state.parts; 0 is "no partition"
	slot uint16
	live bool
}

// state is everything a snapshot holds. It is replaced wholesale when a replica
// re-bootstraps, under both Store locks.
type state struct {
	idx     *hnsw.Index
	ids     map[string]uint64
	entries []entry
	parts   []string
	partIdx map[string]uint32
	live    int
	meta    *keyMeta // entries' part, slot and liveness, for searches without Store.mu
}

func newState(cfg hnsw.Config) (state, error) {
	idx, err := hnsw.New(cfg)
	if err != nil {
		return state{}, fmt.Errorf("creating index: %w", err)
	}
	return state{idx: idx, ids: map[string]uint64{}, parts: []string{""}, partIdx: map[string]uint32{"": 0}, meta: newKeyMeta()}, nil
}

// indexMeta fills st.meta from st.entries (a state just read from a snapshot).
func (st *state) indexMeta() {
	st.meta = newKeyMeta()
	for key, e := range st.entries {
		if e.live {
			st.meta.set(uint64(key), e.part, e.slot)
		}
	}
}

// StoreConfig configures a Store.
type StoreConfig struct {
	Index   hnsw.Config
	DataDir string
	WAL     wal.Options
}

// Store is the durable state of one shard replica: the HNSW index, the id and partition
// maps, and the WAL they are rebuilt from.
//
// Locking: applyMu serialises applying records in sequence order (and snapshots, which
// must see a state that matches one sequence number); mu guards the maps. A search
// read-locks mu only to pick up the state and to map its result keys to ids: its graph
// walk runs without it (the partition filter reads st.meta), so a writer waiting for mu
// never holds up new searches behind the walks in flight.
type Store struct {
	cfg     StoreConfig
	log     *wal.Log
	snapDir string

	applyMu   sync.Mutex
	applyCond *sync.Cond
	applied   uint64
	// broken is set once, under applyMu, and read without it by every request.
	broken atomic.Pointer[breakage]

	mu sync.RWMutex
	st state

	sinceSnap   atomic.Int64
	snapMu      sync.Mutex
	lastSnapSeq uint64
	prevSnapSeq uint64
	appliedSeq  atomic.Uint64 // mirror of applied for lock-free readers
	slotWrites  [slots.Count]atomic.Uint64

	// walkStarts, when set (tests), is called by Search just before its graph walk.
	walkStarts func()
}

// OpenStore recovers a store from its data directory: the newest valid snapshot, then
// the WAL after it.
func OpenStore(cfg StoreConfig) (*Store, error) {
	walDir, snapDir := filepath.Join(cfg.DataDir, "wal"), filepath.Join(cfg.DataDir, "snapshots")
	for _, d := range []string{walDir, snapDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	s := &Store{cfg: cfg, snapDir: snapDir}
	s.applyCond = sync.NewCond(&s.applyMu)
	st, err := newState(cfg.Index)
	if err != nil {
		return nil, err
	}
	s.st = st
	seq, err := wal.LoadSnapshot(snapDir, func(seq uint64, r io.Reader) error {
		loaded, err := readState(r, cfg.Index)
		if err != nil {
			return err
		}
		s.st = loaded
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading snapshot: %w", err)
	}
	s.applied, s.lastSnapSeq = seq, seq
	if s.log, err = wal.Open(walDir, cfg.WAL); err != nil {
		return nil, fmt.Errorf("opening wal: %w", err)
	}
	if last := s.log.LastSeq(); last < seq {
		// The log ends before the snapshot (a replica that bootstrapped, or a lost log):
		// continue numbering after the snapshot.
		if err := s.log.Reset(seq); err != nil {
			s.log.Close()
			return nil, fmt.Errorf("resetting wal to snapshot seq %d: %w", seq, err)
		}
	} else if last > seq {
		err := s.log.Read(seq+1, func(rec wal.Record) error {
			r, err := decodeRecord(rec.Data)
			if err != nil {
				return fmt.Errorf("record %d: %w", rec.Seq, err)
			}
			if err := checkDim(r, cfg.Index.Dim); err != nil {
				return fmt.Errorf("record %d: %w", rec.Seq, err)
			}
			// An index that refuses a logged record cannot be made to follow the log: the
			// shard does not start, rather than serve a state that silently lacks it.
			if _, err := s.apply(r); err != nil {
				return fmt.Errorf("record %d: %w", rec.Seq, err)
			}
			s.applied = rec.Seq
			return nil
		})
		if err != nil {
			s.log.Close()
			return nil, fmt.Errorf("replaying wal after snapshot %d: %w", seq, err)
		}
	}
	s.appliedSeq.Store(s.applied)
	return s, nil
}

// Close syncs and closes the WAL (wal.Log.Close writes and fsyncs what is queued).
func (s *Store) Close() error {
	if err := s.log.Close(); err != nil && !errors.Is(err, wal.ErrClosed) {
		return fmt.Errorf("closing wal: %w", err)
	}
	return nil
}

// Applied is the sequence number of the last record applied to the index.
func (s *Store) Applied() uint64 { return s.appliedSeq.Load() }

// Log is the store's WAL, for replication streams.
func (s *Store) Log() *wal.Log { return s.log }

// Dim is the vector dimension.
func (s *Store) Dim() int { return s.cfg.Index.Dim }

// Write appends one encoded record to the WAL and applies it, in sequence order with
// every other write; it returns once both are done. Concurrent writers share fsyncs
// (the WAL's group commit) and then apply one after another.
func (s *Store) Write(ctx context.Context, r record) (uint64, int, error) {
	data := encodeRecord(s.cfg.Index.Dim, r)
	if err := s.Broken(); err != nil {
		return 0, 0, err
	}
	// Not cancellable: once the record may be in the log it must be applied, or every
	// later record would wait for it forever.
	seq, err := s.log.Append(context.WithoutCancel(ctx), data)
	if errors.Is(err, wal.ErrTooLarge) { // refused before it was queued: nothing to undo
		return 0, 0, &client.APIError{Code: client.CodePayloadTooLarge, Message: err.Error()}
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if err != nil {
		return 0, 0, s.breakLocked(brokenWAL, 0, err)
	}
	for s.applied+1 < seq && s.broken.Load() == nil {
		s.applyCond.Wait()
	}
	if err := s.Broken(); err != nil {
		return 0, 0, err
	}
	n, err := s.apply(r)
	if err != nil {
		return 0, 0, s.breakLocked(brokenIndex, seq, err)
	}
	s.setApplied(seq)
	return seq, n, nil
}

// Broken returns the error every request gets once the store stopped serving, or nil.
func (s *Store) Broken() error {
	if b := s.broken.Load(); b != nil {
		return b.err
	}
	return nil
}

// breakLocked stops the store for good (until a restart): the first cause wins, is
// logged with the record it happened at, and wakes every writer waiting for its turn.
// Callers hold applyMu.
func (s *Store) breakLocked(cause string, seq uint64, err error) error {
	if s.broken.Load() == nil {
		b := &breakage{cause: cause, seq: seq}
		switch cause {
		case brokenIndex:
			b.err = fmt.Errorf("%w: the index failed to apply record %d, which the write-ahead log holds: %w", errBroken, seq, err)
			slog.Error("Index diverged from the write-ahead log: the shard stops serving until it restarts",
				"seq", seq, "applied", s.applied, "err", err)
		default:
			b.err = fmt.Errorf("%w: write-ahead log failed: %w", errBroken, err)
			slog.Error("Write-ahead log failed: the shard stops serving until it restarts", "applied", s.applied, "err", err)
		}
		s.broken.Store(b)
	}
	s.applyCond.Broadcast()
	return s.broken.Load().err
}

// ApplyReplicated stores a record received from the primary under the primary's
// sequence number and applies it. Records at or below the applied one are skipped.
func (s *Store) ApplyReplicated(ctx context.Context, seq uint64, data []byte) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if err := s.Broken(); err != nil {
		return err
	}
	if seq <= s.applied {
		return nil
	}
	if seq != s.applied+1 {
		return fmt.Errorf("%w: got %d after %d", errGap, seq, s.applied)
	}
	r, err := decodeRecord(data)
	if err == nil {
		err = checkDim(r, s.cfg.Index.Dim)
	}
	if err != nil {
		return fmt.Errorf("record %d: %w", seq, err)
	}
	if err := s.log.AppendAt(ctx, seq, data); err != nil {
		return fmt.Errorf("appending replicated record %d: %w", seq, err)
	}
	if _, err := s.apply(r); err != nil {
		return s.breakLocked(brokenIndex, seq, err)
	}
	s.setApplied(seq)
	return nil
}

// checkDim refuses records of another dimension: a data directory or a primary of a
// different index, whose vectors the index would otherwise drop one by one.
func checkDim(r record, dim int) error {
	if len(r.upserts) > 0 && len(r.upserts[0].vec) != dim {
		return fmt.Errorf("vectors of dimension %d in an index of dimension %d: %w", len(r.upserts[0].vec), dim, hnsw.ErrDimension)
	}
	return nil
}

func (s *Store) setApplied(seq uint64) {
	s.applied = seq
	s.appliedSeq.Store(seq)
	s.sinceSnap.Add(1)
	s.applyCond.Broadcast()
}

// apply changes the in-memory state by one record; callers hold applyMu. It returns the
// number of vectors upserted or deleted. Input was validated before it reached the WAL,
// so the index refusing a change means the maps and the index no longer agree: the
// error names the key, and the caller stops the store.
func (s *Store) apply(r record) (int, error) {
	switch r.op {
	case opUpsert:
		return s.applyUpsert(r.upserts)
	case opDelete:
		s.mu.Lock()
		keys := make([]uint64, 0, len(r.deletes))
		for _, it := range r.deletes {
			if key, ok := s.removeLocked(it.id, r.partition); ok {
				keys = append(keys, key)
				s.slotWrites[it.slot].Add(1)
			}
		}
		s.mu.Unlock()
		return len(keys), s.deleteKeys(keys)
	case opDrop:
		s.mu.Lock()
		var keys []uint64
		for key := range s.st.entries {
			if e := &s.st.entries[key]; e.live && r.drop.Has(int(e.slot)) {
				s.removeLocked(e.id, "")
				keys = append(keys, uint64(key))
			}
		}
		s.mu.Unlock()
		return len(keys), s.deleteKeys(keys)
	}
	return 0, nil
}

// deleteKeys removes keys from the index; the first failure is returned, after the rest
// were tried.
func (s *Store) deleteKeys(keys []uint64) error {
	var first error
	for _, key := range keys {
		if err := s.st.idx.Delete(key); err != nil && first == nil {
			first = fmt.Errorf("deleting key %d: %w", key, err)
		}
	}
	return first
}

func (s *Store) removeLocked(id, partition string) (uint64, bool) {
	key, ok := s.st.ids[id]
	if !ok {
		return 0, false
	}
	e := &s.st.entries[key]
	if partition != "" && s.st.parts[e.part] != partition {
		return 0, false
	}
	e.live = false
	s.st.meta.clear(key)
	delete(s.st.ids, id)
	s.st.live--
	return key, true
}

func (s *Store) applyUpsert(items []upsertItem) (int, error) {
	keys := make([]uint64, len(items))
	s.mu.Lock()
	for i, it := range items {
		key, ok := s.st.ids[it.id]
		if !ok {
			key = uint64(len(s.st.entries))
			s.st.entries = append(s.st.entries, entry{})
			s.st.ids[it.id] = key
			s.st.live++
		}
		e := entry{id: it.id, part: s.st.intern(it.partition), slot: uint16(it.slot), live: true}
		s.st.entries[key] = e
		s.st.meta.set(key, e.part, e.slot)
		keys[i] = key
		s.slotWrites[it.slot].Add(1)
	}
	s.mu.Unlock()
	// A batch may name an id twice; only its last vector counts, as if applied in order.
	last := make(map[uint64]int, len(items))
	for i, k := range keys {
		last[k] = i
	}
	work := make([]int, 0, len(last))
	for i, k := range keys {
		if last[k] == i {
			work = append(work, i)
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(work)/16+1)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				j := int(next.Add(1)) - 1
				if j >= len(work) {
					return
				}
				i := work[j]
				if err := s.st.idx.Add(keys[i], items[i].vec); err != nil && errs[w] == nil {
					errs[w] = fmt.Errorf("adding id %q as key %d: %w", items[i].id, keys[i], err)
				}
			}
		}()
	}
	wg.Wait()
	return len(items), errors.Join(errs...)
}

// intern returns the index of partition in st.parts, adding it if new. For the
// Store's live state the caller holds Store.mu.
func (st *state) intern(partition string) uint32 {
	if p, ok := st.partIdx[partition]; ok {
		return p
	}
	p := uint32(len(st.parts))
	st.parts = append(st.parts, partition)
	st.partIdx[partition] = p
	return p
}

// Get returns the vector stored under id; with a partition, only if it is in it.
func (s *Store) Get(id, partition string) (client.Vector, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	key, ok := s.st.ids[id]
	if !ok {
		return client.Vector{}, false
	}
	e := s.st.entries[key]
	if partition != "" && s.st.parts[e.part] != partition {
		return client.Vector{}, false
	}
	vec, ok := s.st.idx.Get(key)
	if !ok {
		return client.Vector{}, false
	}
	return client.Vector{ID: id, Vector: vec, Partition: s.st.parts[e.part]}, true
}

// storedSlots calls yield with the slot of every id in items that is stored now.
func (s *Store) storedSlots(items []upsertItem, yield func(int) bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, it := range items {
		if key, ok := s.st.ids[it.id]; ok && !yield(int(s.st.entries[key].slot)) {
			return
		}
	}
}

// SlotOf returns the slot of a stored id, or of (id, partition) when it is not stored.
func (s *Store) SlotOf(id, partition string) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if key, ok := s.st.ids[id]; ok {
		e := s.st.entries[key]
		if partition == "" || s.st.parts[e.part] == partition {
			return int(e.slot)
		}
	}
	return slots.Of(slots.KeyOf(id, partition))
}

// Search returns the k nearest stored vectors to q; with a partition, only that
// partition's vectors, filtered inside the graph walk. The walk holds no Store lock:
// the index is safe for concurrent use, and the filter reads st.meta.
func (s *Store) Search(q []float32, k, ef int, partition string) ([]client.Hit, error) {
	for {
		s.mu.RLock()
		idx, meta := s.st.idx, s.st.meta
		p, known := s.st.partIdx[partition]
		s.mu.RUnlock()
		if !known {
			return []client.Hit{}, nil
		}
		opts := hnsw.SearchOptions{Ef: ef}
		if partition != "" {
			opts.Filter = func(key uint64) bool {
				kp, _, live := meta.get(key)
				return live && kp == p
			}
		}
		if s.walkStarts != nil {
			s.walkStarts()
		}
		res, err := idx.Search(q, k, opts)
		if err != nil {
			return nil, fmt.Errorf("searching: %w", err)
		}
		if hits, ok := s.hits(res, idx, partition, p); ok {
			return hits, nil
		}
		// A replica re-bootstrapped during the walk: its keys name other ids now.
	}
}

// hits maps the keys of a search over idx to ids, dropping those deleted or moved to
// another partition since the walk saw them; ok is false when the state is no longer
// the one of idx.
func (s *Store) hits(res []hnsw.Result, idx *hnsw.Index, partition string, p uint32) ([]client.Hit, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.st.idx != idx {
		return nil, false
	}
	hits := make([]client.Hit, 0, len(res))
	for _, r := range res {
		if r.Key >= uint64(len(s.st.entries)) {
			continue
		}
		e := s.st.entries[r.Key]
		if !e.live || (partition != "" && e.part != p) {
			continue
		}
		hits = append(hits, client.Hit{ID: e.id, Distance: r.Distance, Partition: s.st.parts[e.part]})
	}
	return hits, true
}

// Len is the number of stored vectors.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st.live
}

// MemoryBytes estimates the memory held by the index.
func (s *Store) MemoryBytes() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st.idx.MemoryBytes() + int64(len(s.st.entries))*48
}

// exportSlots calls fn with batches of the stored vectors whose slot is in set.
func (s *Store) exportSlots(set *slots.Set, batch int, fn func([]upsertItem) error) error {
	s.mu.RLock()
	var keys []uint64
	for key, e := range s.st.entries {
		if e.live && set.Has(int(e.slot)) {
			keys = append(keys, uint64(key))
		}
	}
	s.mu.RUnlock()
	items := make([]upsertItem, 0, batch)
	for _, key := range keys {
		s.mu.RLock()
		e := s.st.entries[key]
		vec, ok := s.st.idx.Get(key)
		part := s.st.parts[e.part]
		s.mu.RUnlock()
		if !ok || !e.live {
			continue
		}
		items = append(items, upsertItem{id: e.id, partition: part, vec: vec, slot: int(e.slot)})
		if len(items) == batch {
			if err := fn(items); err != nil {
				return err
			}
			items = items[:0]
		}
	}
	if len(items) > 0 {
		return fn(items)
	}
	return nil
}

// Snapshot writes the state at the applied sequence number (temp file and rename, by the
// WAL package) and trims the log before the previous snapshot, which stays as a fallback.
// Writes wait while it runs.
func (s *Store) Snapshot() error {
	if err := s.Broken(); err != nil {
		// The state may lack records the log holds: a snapshot of it would outlive the
		// log it trims, and the restart that repairs the store would load it.
		return fmt.Errorf("not writing a snapshot: %w", err)
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.applyMu.Lock()
	seq := s.applied
	if seq == s.lastSnapSeq && s.hasSnapshot() {
		s.applyMu.Unlock()
		return nil
	}
	err := wal.WriteSnapshot(s.snapDir, seq, func(w io.Writer) error { return writeState(w, &s.st) })
	if err == nil {
		s.sinceSnap.Store(0)
	}
	s.applyMu.Unlock()
	if err != nil {
		return fmt.Errorf("writing snapshot at %d: %w", seq, err)
	}
	if seq != s.lastSnapSeq {
		s.prevSnapSeq, s.lastSnapSeq = s.lastSnapSeq, seq
	}
	if s.prevSnapSeq > 0 {
		if err := s.log.TrimBefore(s.prevSnapSeq + 1); err != nil {
			return fmt.Errorf("trimming wal before %d: %w", s.prevSnapSeq+1, err)
		}
	}
	return nil
}

func (s *Store) hasSnapshot() bool {
	path, _, _, err := wal.LatestSnapshot(s.snapDir)
	return err == nil && path != ""
}

// RecordsSinceSnapshot counts records applied since the last snapshot.
func (s *Store) RecordsSinceSnapshot() int64 { return s.sinceSnap.Load() }

// openSnapshot returns the newest snapshot and its sequence number, writing one first
// if there is none yet.
func (s *Store) openSnapshot() (io.ReadCloser, uint64, int64, error) {
	path, seq, size, err := wal.LatestSnapshot(s.snapDir)
	if err != nil || path == "" {
		if err := s.Snapshot(); err != nil {
			return nil, 0, 0, err
		}
		if path, seq, size, err = wal.LatestSnapshot(s.snapDir); err != nil {
			return nil, 0, 0, fmt.Errorf("finding snapshot: %w", err)
		}
	}
	rc, err := wal.OpenSnapshot(path)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("opening snapshot %s: %w", path, err)
	}
	return rc, seq, size, nil
}

// Replace installs a snapshot received from the primary at seq: the state, a local
// snapshot, and a log that continues after seq. A replica uses it to bootstrap and when
// the primary has trimmed the records it needs.
func (s *Store) Replace(seq uint64, r io.Reader) error {
	st, err := readState(r, s.cfg.Index)
	if err != nil {
		return err
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if err := wal.WriteSnapshot(s.snapDir, seq, func(w io.Writer) error { return writeState(w, &st) }); err != nil {
		return fmt.Errorf("writing bootstrap snapshot: %w", err)
	}
	if err := s.log.Reset(seq); err != nil {
		return fmt.Errorf("resetting wal to %d: %w", seq, err)
	}
	s.mu.Lock()
	s.st = st
	s.mu.Unlock()
	s.prevSnapSeq, s.lastSnapSeq = 0, seq
	s.applied = seq
	s.appliedSeq.Store(seq)
	s.sinceSnap.Store(0)
	return nil
}

// writeState encodes the maps, then the index (its own format) last.
func writeState(w io.Writer, st *state) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	bw.WriteString(snapshotMagic)
	var buf []byte
	buf = binary.LittleEndian.AppendUint64(buf, uint64(len(st.entries)))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(st.live))
	bw.Write(buf)
	for key, e := range st.entries {
		if !e.live {
			continue
		}
		buf = binary.LittleEndian.AppendUint64(buf[:0], uint64(key))
		buf = appendString(buf, e.id)
		buf = appendString(buf, st.parts[e.part])
		if _, err := bw.Write(buf); err != nil {
			return fmt.Errorf("writing id map: %w", err)
		}
	}
	if _, err := st.idx.WriteTo(bw); err != nil {
		return fmt.Errorf("writing index: %w", err)
	}
	return bw.Flush()
}

func readState(r io.Reader, cfg hnsw.Config) (state, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	var head [len(snapshotMagic) + 16]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		return state{}, fmt.Errorf("reading snapshot header: %w", err)
	}
	if string(head[:len(snapshotMagic)]) != snapshotMagic {
		return state{}, fmt.Errorf("%w: not a shard snapshot", hnsw.ErrCorrupt)
	}
	nextKey := binary.LittleEndian.Uint64(head[len(snapshotMagic):])
	live := binary.LittleEndian.Uint64(head[len(snapshotMagic)+8:])
	if live > nextKey || nextKey > 1<<40 {
		return state{}, fmt.Errorf("%w: %d live of %d keys", hnsw.ErrCorrupt, live, nextKey)
	}
	st := state{ids: make(map[string]uint64, live), entries: make([]entry, nextKey),
		parts: []string{""}, partIdx: map[string]uint32{"": 0}, live: int(live)}
	var kb [8]byte
	for range live {
		if _, err := io.ReadFull(br, kb[:]); err != nil {
			return state{}, fmt.Errorf("reading id map: %w", err)
		}
		key := binary.LittleEndian.Uint64(kb[:])
		id, err := readString(br)
		if err != nil {
			return state{}, err
		}
		part, err := readString(br)
		if err != nil {
			return state{}, err
		}
		if key >= nextKey || st.entries[key].live {
			return state{}, fmt.Errorf("%w: bad key %d in id map", hnsw.ErrCorrupt, key)
		}
		st.entries[key] = entry{id: id, part: st.intern(part), slot: uint16(slots.Of(slots.KeyOf(id, part))), live: true}
		st.ids[id] = key
	}
	idx, err := hnsw.Read(br)
	if err != nil {
		return state{}, fmt.Errorf("reading index: %w", err)
	}
	// A snapshot's checksum is checked when its reader reaches the end (and a replication
	// stream is cut by the sender if it fails), so the state counts only after a clean EOF.
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		if err == nil {
			err = fmt.Errorf("%w: trailing bytes after the index", hnsw.ErrCorrupt)
		}
		return state{}, fmt.Errorf("reading snapshot end: %w", err)
	}
	if got := idx.Config(); got.Dim != cfg.Dim || got.Metric != cfg.Metric {
		return state{}, fmt.Errorf("snapshot holds dimension %d %s, configured %d %s: %w",
			got.Dim, got.Metric, cfg.Dim, cfg.Metric, hnsw.ErrDimension)
	}
	st.idx = idx
	st.indexMeta()
	return st, nil
}

func readString(br *bufio.Reader) (string, error) {
	var lb [2]byte
	if _, err := io.ReadFull(br, lb[:]); err != nil {
		return "", fmt.Errorf("reading id map: %w", err)
	}
	b := make([]byte, binary.LittleEndian.Uint16(lb[:]))
	if _, err := io.ReadFull(br, b); err != nil {
		return "", fmt.Errorf("reading id map: %w", err)
	}
	return string(b), nil
}
