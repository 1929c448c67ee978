package shard

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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

// snapshotMagic starts a shard snapshot; see writeState for the layout.
const snapshotMagic = "ANNSHRD2"

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
// re-bootstraps, under both Store locks; whoever holds a *state (an insert in flight,
// the drain) keeps working on the one it has.
type state struct {
	idx     *hnsw.Index
	tail    *tail // applied vectors the graph lacks yet
	ids     map[string]uint64
	entries []entry
	parts   []string
	partIdx map[string]uint32
	live    int
	meta    *keyMeta // entries' part, slot and liveness, for searches without Store.mu
	history historyID
}

func newState(cfg hnsw.Config) (*state, error) {
	idx, err := hnsw.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating index: %w", err)
	}
	return &state{idx: idx, tail: newTail(), ids: map[string]uint64{}, parts: []string{""}, partIdx: map[string]uint32{"": 0}, meta: newKeyMeta()}, nil
}

// StoreConfig configures a Store.
type StoreConfig struct {
	Index   hnsw.Config
	DataDir string
	WAL     wal.Options
	// DrainWorkers is how many goroutines insert the tail left by a recovery into the
	// graph; 0 means GOMAXPROCS.
	DrainWorkers int
}

// Store is the durable state of one shard replica: the HNSW index, the id and partition
// maps, and the WAL they are rebuilt from.
//
// A write is applied in two steps. Under applyMu, in sequence order, it changes the maps
// and puts its vectors in the tail (cheap: searches and gets see it from then on); then,
// outside any store-wide lock, its writer inserts the vectors into the graph, several
// writes at once, and answers. Recovery applies the WAL the same way but leaves the
// graph inserts to a background drain, so a shard serves as soon as its snapshot and WAL
// are read (see tail.go).
//
// Locking: applyMu serialises applying records in sequence order (and the start of a
// snapshot, which must see a state that matches one sequence number); mu guards the
// maps. A search read-locks mu only to pick up the state and to map its result keys to
// ids: its graph walk and tail scan run without it (the partition filter reads
// st.meta), so a writer waiting for mu never holds up new searches behind the walks in
// flight. keyLocks order the graph insert and delete of one key, so the graph ends with
// a key's last write.
type Store struct {
	cfg     StoreConfig
	log     *wal.Log
	snapDir string
	dist    func(a, b []float32) float32 // the metric, for scans of the tail

	applyMu   sync.Mutex
	applyCond *sync.Cond
	applied   uint64
	// broken is set once, under applyMu, and read without it by every request.
	broken atomic.Pointer[breakage]

	mu sync.RWMutex
	st *state

	keyLocks [256]sync.Mutex

	snapMu      sync.Mutex
	lastSnapSeq uint64
	prevSnapSeq uint64
	since       replayCost    // since the last snapshot began
	appliedSeq  atomic.Uint64 // mirror of applied for lock-free readers
	slotWrites  [slots.Count]atomic.Uint64

	// walkStarts, when set (tests), is called by Search just before its graph walk.
	walkStarts func()

	// hidden is the slots searches and gets do not see (not owned: importing, or handed
	// away and not dropped yet); nil when every slot is visible. See SetVisible.
	hidden atomic.Pointer[slots.Set]
	// retainFrom, when set, is the oldest WAL record a slot stream still needs (0: none);
	// Snapshot trims no record at or after it.
	retainFrom func() uint64

	drainStop context.CancelFunc // ends the drain of the tail; under applyMu
	drainDone chan struct{}      // closed when that drain returns

	statsMu  sync.Mutex
	recovery client.RecoveryReport
	lastSnap *client.SnapshotReport
}

// replayCost counts what a restart would redo if the shard stopped now: the WAL after
// the last snapshot (records, bytes and the vectors they write) and the graph inserts
// done since it (the vectors a restart puts back in the tail).
type replayCost struct {
	records, bytes, vectors, indexed atomic.Int64
}

// ReplayCost is the work since the last snapshot; Store.SinceSnapshot returns it.
type ReplayCost struct {
	Records  int64 // WAL records applied
	WALBytes int64 // their payload bytes
	Vectors  int64 // vectors they upserted or deleted
	Indexed  int64 // vectors inserted into the graph
}

// OpenStore recovers a store from its data directory: the newest valid snapshot, then
// the WAL after it. The WAL's vectors are applied to the maps and the tail, not yet
// inserted into the graph: a drain does that in the background, on every core, once
// OpenStore has returned.
func OpenStore(cfg StoreConfig) (*Store, error) {
	walDir, snapDir := filepath.Join(cfg.DataDir, "wal"), filepath.Join(cfg.DataDir, "snapshots")
	for _, d := range []string{walDir, snapDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	s := &Store{cfg: cfg, snapDir: snapDir, dist: hnsw.DistanceFunc(cfg.Index.Metric)}
	s.applyCond = sync.NewCond(&s.applyMu)
	fileHistory, hasFile, err := readHistory(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if s.st, err = newState(cfg.Index); err != nil {
		return nil, err
	}
	start := time.Now()
	loaded := false
	seq, err := wal.LoadSnapshot(snapDir, func(seq uint64, r io.Reader) error {
		st, err := readState(r, cfg.Index)
		if err != nil {
			return err
		}
		s.st, loaded = st, true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading snapshot: %w", err)
	}
	s.recovery = client.RecoveryReport{SnapshotSeq: seq, SnapshotVectors: s.st.live, SnapshotLoadSeconds: time.Since(start).Seconds()}
	s.applied, s.lastSnapSeq = seq, seq
	if s.log, err = wal.Open(walDir, cfg.WAL); err != nil {
		return nil, fmt.Errorf("opening wal: %w", err)
	}
	// The history file names whose records the log holds. A snapshot of another
	// history means a bootstrap from a new primary stopped between writing its snapshot
	// and resetting the log: the log is of the old history and must not be replayed.
	foreign := loaded && hasFile && fileHistory != s.st.history
	switch {
	case !loaded && hasFile:
		s.st.history = fileHistory
	case !loaded:
		s.st.history = newHistoryID()
	}
	if last := s.log.LastSeq(); last < seq || foreign {
		// The log ends before the snapshot (a replica that bootstrapped, or a lost log)
		// or is of another history: continue numbering after the snapshot.
		if err := s.log.Reset(seq); err != nil {
			s.log.Close()
			return nil, fmt.Errorf("resetting wal to snapshot seq %d: %w", seq, err)
		}
	} else if last > seq {
		if err := s.replay(seq); err != nil {
			s.log.Close()
			return nil, err
		}
	}
	if !hasFile || fileHistory != s.st.history {
		if err := writeHistory(cfg.DataDir, s.st.history); err != nil {
			s.log.Close()
			return nil, err
		}
	}
	s.appliedSeq.Store(s.applied)
	s.recovery.TailVectors = s.st.tail.Len()
	s.recovery.Seconds = time.Since(start).Seconds()
	s.startDrain()
	return s, nil
}

// replay applies the WAL after the snapshot at seq: in order, to the maps and the tail.
func (s *Store) replay(seq uint64) error {
	start := time.Now()
	err := s.log.Read(seq+1, func(rec wal.Record) error {
		r, err := decodeRecord(rec.Data)
		if err != nil {
			return fmt.Errorf("record %d: %w", rec.Seq, err)
		}
		if err := checkDim(r, s.cfg.Index.Dim); err != nil {
			return fmt.Errorf("record %d: %w", rec.Seq, err)
		}
		// An index that refuses a logged record cannot be made to follow the log: the
		// shard does not start, rather than serve a state that silently lacks it.
		n, _, err := s.apply(rec.Seq, r)
		if err != nil {
			return fmt.Errorf("record %d: %w", rec.Seq, err)
		}
		s.applied = rec.Seq
		s.noteApplied(len(rec.Data), n)
		s.recovery.ReplayedRecords++
		s.recovery.ReplayedVectors += int64(n)
		s.recovery.ReplayedBytes += int64(len(rec.Data))
		return nil
	})
	if err != nil {
		return fmt.Errorf("replaying wal after snapshot %d: %w", seq, err)
	}
	s.recovery.ReplaySeconds = time.Since(start).Seconds()
	return nil
}

// startDrain inserts the tail's vectors into the graph in the background, on every
// core; writes applied meanwhile insert their own. The caller holds applyMu, or owns
// the store alone.
func (s *Store) startDrain() {
	st := s.st
	ents := st.tail.pendingEntries()
	if len(ents) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.drainStop, s.drainDone = cancel, done
	go func() {
		defer close(done)
		if testHookDrain != nil {
			testHookDrain()
		}
		start := time.Now()
		workers := s.cfg.DrainWorkers
		if workers <= 0 {
			workers = runtime.GOMAXPROCS(0)
		}
		w := insertWork{st: st, ents: ents}
		if err := s.insertAll(ctx, w, workers); err != nil {
			// Not here: whoever stops this drain holds applyMu while it waits.
			go s.insertFailed(w, err)
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.statsMu.Lock()
		s.recovery.DrainSeconds = time.Since(start).Seconds()
		s.statsMu.Unlock()
		slog.Info("Tail inserted into the graph", "vectors", len(ents), "seconds", time.Since(start).Seconds())
	}()
}

// testHookDrain, set by tests, runs when a drain starts, before it inserts anything.
var testHookDrain func()

// stopDrain ends a running drain and waits for it. The caller holds applyMu, or owns the
// store alone.
func (s *Store) stopDrain() {
	if s.drainStop != nil {
		s.drainStop()
		<-s.drainDone
		s.drainStop, s.drainDone = nil, nil
	}
}

// insertAll inserts w's entries into its state's graph from up to workers goroutines,
// the caller's being one of them (a small write, one worker, starts no goroutine),
// until done or ctx ends. An insert the index refuses (the vector was checked when it
// was applied, so it is a bug) ends it with the error; see insertFailed.
func (s *Store) insertAll(ctx context.Context, w insertWork, workers int) error {
	workers = min(workers, len(w.ents))
	if workers == 0 {
		return nil
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	work := func(i int) {
		for ctx.Err() == nil && errs[i] == nil {
			j := int(next.Add(1)) - 1
			if j >= len(w.ents) {
				return
			}
			errs[i] = s.insert(w.st, w.ents[j])
		}
	}
	for i := 1; i < workers; i++ {
		wg.Go(func() { work(i) })
	}
	work(0)
	wg.Wait()
	return errors.Join(errs...)
}

// insertFailed stops the store after an insert of w failed with err, unless w's state
// was replaced meanwhile (a replica's bootstrap).
func (s *Store) insertFailed(w insertWork, err error) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if s.st != w.st {
		return err
	}
	var seq uint64
	for _, e := range w.ents {
		seq = max(seq, e.seq)
	}
	return s.breakLocked(brokenIndex, seq, err)
}

// insert puts e's vector into the graph, unless a later write of its key was applied
// meanwhile (that write inserts its own, or deleted the key).
func (s *Store) insert(st *state, e *tailEntry) error {
	mu := s.keyLock(e.key)
	mu.Lock()
	defer mu.Unlock()
	if !st.tail.current(e) {
		return nil
	}
	if err := st.idx.Add(e.key, e.raw); err != nil {
		return fmt.Errorf("adding key %d of record %d: %w", e.key, e.seq, err)
	}
	st.tail.indexed(e)
	s.since.indexed.Add(1)
	return nil
}

func (s *Store) keyLock(key uint64) *sync.Mutex {
	return &s.keyLocks[(key*0x9e3779b97f4a7c15)>>56]
}

// Close stops the drain of the tail and closes the WAL (wal.Log.Close writes and fsyncs
// what is queued). A snapshot written before keeps what the drain had not inserted.
func (s *Store) Close() error {
	s.applyMu.Lock()
	s.stopDrain()
	s.applyMu.Unlock()
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
// every other write, then inserts its vectors into the graph; it returns once all is
// done. Concurrent writers share fsyncs (the WAL's group commit) and insert in parallel.
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
	if err != nil {
		err = s.breakLocked(brokenWAL, 0, err)
		s.applyMu.Unlock()
		return 0, 0, err
	}
	for s.applied+1 < seq && s.broken.Load() == nil {
		s.applyCond.Wait()
	}
	if err := s.Broken(); err != nil {
		s.applyMu.Unlock()
		return 0, 0, err
	}
	n, work, err := s.apply(seq, r)
	if err != nil {
		err = s.breakLocked(brokenIndex, seq, err)
		s.applyMu.Unlock()
		return 0, 0, err
	}
	s.setApplied(seq, len(data), n)
	s.applyMu.Unlock()
	if err := s.insertAll(context.Background(), work, insertWorkers(len(work.ents))); err != nil {
		return 0, 0, s.insertFailed(work, err)
	}
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

// insertWorkers is how many goroutines insert a write's n vectors: one per 16, up to
// the cores.
func insertWorkers(n int) int { return min(runtime.GOMAXPROCS(0), n/16+1) }

// ApplyReplicated stores a record received from the primary under the primary's
// sequence number and applies it. Records at or below the applied one are skipped.
func (s *Store) ApplyReplicated(ctx context.Context, seq uint64, data []byte) error {
	s.applyMu.Lock()
	if err := s.Broken(); err != nil {
		s.applyMu.Unlock()
		return err
	}
	if seq <= s.applied {
		s.applyMu.Unlock()
		return nil
	}
	if seq != s.applied+1 {
		applied := s.applied
		s.applyMu.Unlock()
		return fmt.Errorf("%w: got %d after %d", errGap, seq, applied)
	}
	r, err := decodeRecord(data)
	if err == nil {
		err = checkDim(r, s.cfg.Index.Dim)
	}
	if err != nil {
		s.applyMu.Unlock()
		return fmt.Errorf("record %d: %w", seq, err)
	}
	if err := s.log.AppendAt(ctx, seq, data); err != nil {
		s.applyMu.Unlock()
		return fmt.Errorf("appending replicated record %d: %w", seq, err)
	}
	n, work, err := s.apply(seq, r)
	if err != nil {
		err = s.breakLocked(brokenIndex, seq, err)
		s.applyMu.Unlock()
		return err
	}
	s.setApplied(seq, len(data), n)
	s.applyMu.Unlock()
	if err := s.insertAll(context.Background(), work, insertWorkers(len(work.ents))); err != nil {
		return s.insertFailed(work, err)
	}
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

func (s *Store) setApplied(seq uint64, bytes, vectors int) {
	s.applied = seq
	s.appliedSeq.Store(seq)
	s.noteApplied(bytes, vectors)
	s.applyCond.Broadcast()
}

// noteApplied adds an applied record to the replay cost since the last snapshot.
func (s *Store) noteApplied(bytes, vectors int) {
	s.since.records.Add(1)
	s.since.bytes.Add(int64(bytes))
	s.since.vectors.Add(int64(vectors))
}

// insertWork is what a write leaves for its writer to insert into the graph.
type insertWork struct {
	st   *state
	ents []*tailEntry
}

// apply changes the in-memory state by one record; callers hold applyMu. It returns the
// number of vectors upserted or deleted, and the tail entries to insert into the graph.
// Input was validated before it reached the WAL, so the index refusing a change means
// the maps and the index no longer agree: the error names the key, and the caller stops
// the store.
func (s *Store) apply(seq uint64, r record) (int, insertWork, error) {
	st := s.st
	switch r.op {
	case opUpsert:
		ents, err := s.applyUpsert(st, seq, r.upserts)
		return len(r.upserts), insertWork{st: st, ents: ents}, err
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
		return len(keys), insertWork{}, s.deleteKeys(st, keys)
	case opDrop:
		s.mu.Lock()
		var keys []uint64
		for key := range st.entries {
			if e := &st.entries[key]; e.live && r.drop.Has(int(e.slot)) {
				s.removeLocked(e.id, "")
				keys = append(keys, uint64(key))
			}
		}
		s.mu.Unlock()
		return len(keys), insertWork{}, s.deleteKeys(st, keys)
	}
	return 0, insertWork{}, nil
}

// deleteKeys removes keys from the tail and the graph; the first failure is returned,
// after the rest were tried. The key lock waits for an insert of the key in flight,
// which would otherwise put it back. A key with a vector in the tail may have none in
// the graph yet; any other must have one.
func (s *Store) deleteKeys(st *state, keys []uint64) error {
	var first error
	for _, key := range keys {
		mu := s.keyLock(key)
		mu.Lock()
		pending := st.tail.remove(key)
		if err := st.idx.Delete(key); err != nil && !(pending && errors.Is(err, hnsw.ErrNotFound)) && first == nil {
			first = fmt.Errorf("deleting key %d: %w", key, err)
		}
		mu.Unlock()
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

func (s *Store) applyUpsert(st *state, seq uint64, items []upsertItem) ([]*tailEntry, error) {
	puts := make([]tailPut, len(items))
	s.mu.Lock()
	for i, it := range items {
		key, existed := st.ids[it.id]
		if !existed {
			key = uint64(len(st.entries))
			st.entries = append(st.entries, entry{})
			st.ids[it.id] = key
			st.live++
		}
		e := entry{id: it.id, part: st.intern(it.partition), slot: uint16(it.slot), live: true}
		st.entries[key] = e
		st.meta.set(key, e.part, e.slot)
		// A key that existed may have a vector in the graph this one replaces.
		puts[i] = tailPut{key: key, seq: seq, raw: it.vec, stale: existed}
		s.slotWrites[it.slot].Add(1)
	}
	s.mu.Unlock()
	for i := range puts {
		var err error
		if puts[i].vec, err = st.idx.Prepare(puts[i].raw); err != nil {
			// The check the graph insert would make, made now: the record is refused
			// before any of it is visible.
			return nil, fmt.Errorf("adding id %q as key %d: %w", items[i].id, puts[i].key, err)
		}
	}
	// A batch may name an id twice: put applies them in order, so only the last counts.
	return st.tail.put(puts), nil
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

// SetVisible makes searches and gets see the vectors of the owned slots only.
func (s *Store) SetVisible(owned slots.Set) {
	if owned == slots.All() {
		s.hidden.Store(nil)
		return
	}
	hidden := slots.All().Minus(owned)
	s.hidden.Store(&hidden)
}

// Get returns the vector stored under id; with a partition, only if it is in it. A
// vector of a hidden slot (SetVisible) is not found. The error is the index's failure
// to read a stored vector (an Int8 index's vector file), never an absent id.
func (s *Store) Get(id, partition string) (client.Vector, bool, error) {
	return s.GetHiding(id, partition, s.hidden.Load())
}

// GetHiding is Get with the given hidden slots (nil: none) instead of SetVisible's.
func (s *Store) GetHiding(id, partition string, hidden *slots.Set) (client.Vector, bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	key, ok := s.st.ids[id]
	if !ok {
		return client.Vector{}, false, nil
	}
	e := s.st.entries[key]
	if hidden != nil && hidden.Has(int(e.slot)) {
		return client.Vector{}, false, nil
	}
	if partition != "" && s.st.parts[e.part] != partition {
		return client.Vector{}, false, nil
	}
	vec, ok, err := s.st.vector(key)
	if !ok || err != nil {
		return client.Vector{}, false, err
	}
	return client.Vector{ID: id, Vector: vec, Partition: s.st.parts[e.part]}, true, nil
}

// vector returns a copy of key's vector as the index stores it: the tail's when it
// has one (the graph may hold an older one, or none yet), else the graph's.
func (st *state) vector(key uint64) ([]float32, bool, error) {
	if vec, ok := st.tail.get(key); ok {
		return slices.Clone(vec), true, nil
	}
	v, ok, err := st.idx.Get(key)
	if err != nil {
		return nil, false, fmt.Errorf("reading vector: %w", err)
	}
	return v, ok, nil
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
	return s.slotOfLocked(id, partition)
}

// deleteItems names the slot of each id to delete (SlotOf), under one read lock.
func (s *Store) deleteItems(ids []string, partition string) []deleteItem {
	items := make([]deleteItem, len(ids))
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i, id := range ids {
		items[i] = deleteItem{id: id, slot: s.slotOfLocked(id, partition)}
	}
	return items
}

// slotOfLocked is SlotOf for callers that hold mu.
func (s *Store) slotOfLocked(id, partition string) int {
	if key, ok := s.st.ids[id]; ok {
		e := s.st.entries[key]
		if partition == "" || s.st.parts[e.part] == partition {
			return int(e.slot)
		}
	}
	return slots.Of(slots.KeyOf(id, partition))
}

// Search returns the k nearest stored vectors to q; with a partition, only that
// partition's vectors: scanned exactly when the partition is small, else filtered inside
// the graph walk (hnsw.Index.SearchSubset plans it). Vectors not in the graph yet are
// scanned exactly beside it (see tail.go), first, so none written before the search is
// missed. The walk and the scan hold no Store lock: the index and the tail are safe for
// concurrent use, and the filter reads st.meta.
func (s *Store) Search(q []float32, k, ef int, partition string) ([]client.Hit, error) {
	return s.SearchHiding(q, k, ef, partition, s.hidden.Load())
}

// SearchHiding is Search with the given hidden slots (nil: none) instead of SetVisible's.
func (s *Store) SearchHiding(q []float32, k, ef int, partition string, hidden *slots.Set) ([]client.Hit, error) {
	for {
		s.mu.RLock()
		st := s.st
		p, known := st.partIdx[partition]
		s.mu.RUnlock()
		if !known {
			return []client.Hit{}, nil
		}
		idx, meta, tl := st.idx, st.meta, st.tail
		// keep passes the live keys of the partition (any, without one) in visible slots.
		keep := func(key uint64) bool {
			kp, slot, live := meta.get(key)
			return live && (partition == "" || kp == p) && (hidden == nil || !hidden.Has(int(slot)))
		}
		var fromTail []hnsw.Result
		if tl.Len() > 0 {
			pq, err := idx.Prepare(q)
			if err != nil {
				return nil, fmt.Errorf("searching: %w", err)
			}
			fromTail = tl.scan(pq, k, keep, s.dist)
		}
		opts := hnsw.SearchOptions{Ef: ef}
		if partition != "" || hidden != nil {
			opts.Filter = keep
		}
		if current := tl.staleFilter(); current != nil {
			if filter := opts.Filter; filter == nil {
				opts.Filter = current
			} else {
				opts.Filter = func(key uint64) bool { return current(key) && filter(key) }
			}
		}
		if s.walkStarts != nil {
			s.walkStarts()
		}
		var res []hnsw.Result
		var err error
		if partition == "" {
			res, err = idx.Search(q, k, opts)
		} else {
			// The index plans: an exact scan of a small partition's keys, or a walk
			// filtered to it with ef grown by the share filtered out.
			sub := hnsw.Subset{Len: meta.partLen(p), Contains: opts.Filter, Keys: func(yield func(uint64) bool) {
				for _, key := range meta.partKeys(p) {
					if !yield(key) {
						return
					}
				}
			}}
			res, _, err = idx.SearchSubset(nil, q, k, opts, sub)
		}
		if err != nil {
			return nil, fmt.Errorf("searching: %w", err)
		}
		if hits, ok := s.hits(mergeResults(fromTail, res, k), idx, partition, p); ok {
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
	tailBytes := s.st.tail.Len() * int64(s.cfg.Index.Dim) * 4
	if s.cfg.Index.Metric == hnsw.Cosine {
		tailBytes *= 2 // the vector as written and normalised
	}
	return s.st.idx.MemoryBytes() + int64(len(s.st.entries))*48 + tailBytes
}

// Unindexed is the number of vectors applied but not in the graph yet (searched by an
// exact scan meanwhile).
func (s *Store) Unindexed() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st.tail.Len()
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
		vec, ok, err := s.st.vector(key)
		part := s.st.parts[e.part]
		s.mu.RUnlock()
		if err != nil {
			return err
		}
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
// Writes wait only while it starts: it copies the maps, takes the tail's pending entries
// and freezes an image of the graph (hnsw.Index.Freeze) at that sequence number, and
// writes them while writes go on.
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
	// At the same seq a new snapshot is still worth writing when the drain moved
	// vectors from the tail into the graph: a restart redoes less.
	if c := s.SinceSnapshot(); seq == s.lastSnapSeq && c.Records == 0 && c.Indexed == 0 && s.hasSnapshot() {
		s.applyMu.Unlock()
		return nil
	}
	v := s.view()
	cost := s.takeSince()
	s.applyMu.Unlock()
	defer v.img.Release()

	start := time.Now()
	var size int64
	err := wal.WriteSnapshot(s.snapDir, seq, func(w io.Writer) error {
		var err error
		size, err = writeState(w, v)
		return err
	})
	if err != nil {
		s.restoreSince(cost)
		return fmt.Errorf("writing snapshot at %d: %w", seq, err)
	}
	s.statsMu.Lock()
	s.lastSnap = &client.SnapshotReport{Seq: seq, Bytes: size, Seconds: time.Since(start).Seconds(),
		Vectors: v.live, TailVectors: len(v.tail), Time: time.Now().UTC()}
	s.statsMu.Unlock()
	if seq != s.lastSnapSeq {
		s.prevSnapSeq, s.lastSnapSeq = s.lastSnapSeq, seq
	}
	if trim := s.prevSnapSeq + 1; s.prevSnapSeq > 0 {
		if s.retainFrom != nil {
			if keep := s.retainFrom(); keep != 0 {
				trim = min(trim, keep)
			}
		}
		if err := s.log.TrimBefore(trim); err != nil {
			return fmt.Errorf("trimming wal before %d: %w", trim, err)
		}
	}
	return nil
}

// snapView is a state as of one sequence number, for writeState: copies of the maps, the
// tail's pending entries and a frozen image of the graph, all taken at once.
type snapView struct {
	history historyID
	entries []entry
	parts   []string
	live    int
	tail    []*tailEntry
	img     *hnsw.Image
}

// view takes a snapView of the current state. The caller holds applyMu, so no record is
// being applied; the image is frozen while no graph insert runs, and the tail is read in
// that same moment, so every key's vector is in exactly one of the two as of then. The
// caller must release the image.
func (s *Store) view() *snapView {
	st := s.st
	s.mu.RLock()
	v := &snapView{history: st.history, entries: slices.Clone(st.entries), parts: slices.Clone(st.parts), live: st.live}
	s.mu.RUnlock()
	v.img = st.idx.Freeze(func() { v.tail = st.tail.pendingEntries() })
	return v
}

// takeSince returns the replay cost since the last snapshot and starts counting anew.
func (s *Store) takeSince() ReplayCost {
	return ReplayCost{Records: s.since.records.Swap(0), WALBytes: s.since.bytes.Swap(0),
		Vectors: s.since.vectors.Swap(0), Indexed: s.since.indexed.Swap(0)}
}

// restoreSince adds back the cost of a snapshot that failed.
func (s *Store) restoreSince(c ReplayCost) {
	s.since.records.Add(c.Records)
	s.since.bytes.Add(c.WALBytes)
	s.since.vectors.Add(c.Vectors)
	s.since.indexed.Add(c.Indexed)
}

// SinceSnapshot is the work a restart would redo now (see ReplayCost); the snapshot
// triggers compare it with their thresholds.
func (s *Store) SinceSnapshot() ReplayCost {
	return ReplayCost{Records: s.since.records.Load(), WALBytes: s.since.bytes.Load(),
		Vectors: s.since.vectors.Load(), Indexed: s.since.indexed.Load()}
}

// Recovery reports how the store was recovered when it opened (or last bootstrapped),
// and the last snapshot it wrote (nil before the first).
func (s *Store) Recovery() (client.RecoveryReport, *client.SnapshotReport) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.recovery, s.lastSnap
}

// hasSnapshot reports whether the newest snapshot file has a valid trailer (its payload
// is checked when it is read; reading it here would cost as much as writing one).
func (s *Store) hasSnapshot() bool {
	seqs, err := wal.Snapshots(s.snapDir)
	if err != nil || len(seqs) == 0 {
		return false
	}
	rc, err := wal.OpenSnapshot(wal.SnapshotPath(s.snapDir, seqs[0]))
	if err != nil {
		return false
	}
	rc.Close()
	return true
}

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

// Replace installs a snapshot received from the primary at seq: the state, its history,
// a local snapshot, and a log that continues after seq. A replica uses it to bootstrap,
// when the primary has trimmed the records it needs, and when the primary's history is
// not its own.
func (s *Store) Replace(seq uint64, r io.Reader) error {
	st, err := readState(r, s.cfg.Index)
	if err != nil {
		return err
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.stopDrain()
	// The order matters to a crash in between: the snapshot first (a restart finds it
	// of another history than the history file, and resets the log), then the log,
	// then the history file.
	err = wal.WriteSnapshot(s.snapDir, seq, func(w io.Writer) error {
		v := &snapView{history: st.history, entries: st.entries, parts: st.parts, live: st.live,
			tail: st.tail.pendingEntries(), img: st.idx.Freeze(nil)}
		defer v.img.Release()
		_, err := writeState(w, v)
		return err
	})
	if err != nil {
		return fmt.Errorf("writing bootstrap snapshot: %w", err)
	}
	if err := s.log.Reset(seq); err != nil {
		return fmt.Errorf("resetting wal to %d: %w", seq, err)
	}
	if err := writeHistory(s.cfg.DataDir, st.history); err != nil {
		return err
	}
	s.mu.Lock()
	s.st = st
	s.mu.Unlock()
	s.prevSnapSeq, s.lastSnapSeq = 0, seq
	s.applied = seq
	s.appliedSeq.Store(seq)
	s.takeSince()
	s.statsMu.Lock()
	s.recovery = client.RecoveryReport{SnapshotSeq: seq, SnapshotVectors: st.live, TailVectors: st.tail.Len()}
	s.statsMu.Unlock()
	s.startDrain()
	return nil
}

// History is the id of the history this store's data belongs to (see history.go).
func (s *Store) History() historyID {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st.history
}

// writeState encodes a snapshot, all integers little-endian:
//
//	magic "ANNSHRD2" | history id [16]byte | next key u64 | live u64 |
//	id map bytes u64 | live x { key u64 | idLen u16 | id | partLen u16 | partition } |
//	tail u64 | tail x { key u64 | dim x f32 } | the hnsw index (its own format)
//
// The tail holds the vectors applied but not in the graph at the snapshot's sequence
// number: a restart scans and inserts them again, as it does those of the WAL after.
// The id map's length lets a reader parse it beside the index. It returns the bytes
// written.
func writeState(w io.Writer, v *snapView) (int64, error) {
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, 1<<16)
	var idMap []byte
	for key, e := range v.entries {
		if e.live {
			idMap = binary.LittleEndian.AppendUint64(idMap, uint64(key))
			idMap = appendString(idMap, e.id)
			idMap = appendString(idMap, v.parts[e.part])
		}
	}
	bw.WriteString(snapshotMagic)
	bw.Write(v.history[:])
	var buf []byte
	buf = binary.LittleEndian.AppendUint64(buf, uint64(len(v.entries)))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(v.live))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(len(idMap)))
	bw.Write(buf)
	if _, err := bw.Write(idMap); err != nil {
		return cw.n, fmt.Errorf("writing id map: %w", err)
	}
	buf = binary.LittleEndian.AppendUint64(buf[:0], uint64(len(v.tail)))
	bw.Write(buf)
	for _, e := range v.tail {
		buf = binary.LittleEndian.AppendUint64(buf[:0], e.key)
		for _, f := range e.raw {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(f))
		}
		if _, err := bw.Write(buf); err != nil {
			return cw.n, fmt.Errorf("writing tail: %w", err)
		}
	}
	if _, err := v.img.WriteTo(bw); err != nil {
		return cw.n, fmt.Errorf("writing index: %w", err)
	}
	err := bw.Flush()
	return cw.n, err
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// readState decodes a snapshot of writeState and checks that it is whole: every live id
// has a vector, in the graph or in the tail, and the graph holds no other. The id map
// is parsed on another goroutine while the index is read.
func readState(r io.Reader, cfg hnsw.Config) (*state, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	var head [len(snapshotMagic) + len(historyID{}) + 24]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		return nil, fmt.Errorf("reading snapshot header: %w", err)
	}
	if string(head[:len(snapshotMagic)]) != snapshotMagic {
		return nil, fmt.Errorf("%w: not a shard snapshot of this version", hnsw.ErrCorrupt)
	}
	rest := head[len(snapshotMagic):]
	var history historyID
	copy(history[:], rest)
	rest = rest[len(history):]
	nextKey := binary.LittleEndian.Uint64(rest)
	live := binary.LittleEndian.Uint64(rest[8:])
	idMapBytes := binary.LittleEndian.Uint64(rest[16:])
	if live > nextKey || nextKey > 1<<40 || idMapBytes < 12*live {
		return nil, fmt.Errorf("%w: %d live of %d keys in %d bytes", hnsw.ErrCorrupt, live, nextKey, idMapBytes)
	}
	// Read as it arrives (a forged length cannot allocate ahead of the data).
	var idMap bytes.Buffer
	if _, err := io.CopyN(&idMap, br, int64(idMapBytes)); err != nil {
		return nil, fmt.Errorf("reading id map: %w", err)
	}
	st := &state{tail: newTail(), parts: []string{""}, partIdx: map[string]uint32{"": 0}, live: int(live), history: history}
	parsed := make(chan error, 1)
	go func() { parsed <- st.parseIDMap(idMap.Bytes(), nextKey, live) }()
	idx, puts, err := readIndex(br, cfg, nextKey)
	if perr := <-parsed; err == nil {
		err = perr
	}
	if err != nil {
		return nil, err
	}
	st.idx = idx
	inGraph := 0
	for i := range puts {
		if key := puts[i].key; !st.entries[key].live {
			return nil, fmt.Errorf("%w: tail vector of key %d, not a live id", hnsw.ErrCorrupt, key)
		}
		if puts[i].vec, err = idx.Prepare(puts[i].raw); err != nil {
			return nil, fmt.Errorf("%w: tail vector of key %d: %w", hnsw.ErrCorrupt, puts[i].key, err)
		}
		if puts[i].stale = idx.Contains(puts[i].key); puts[i].stale {
			inGraph++
		}
	}
	st.tail.put(puts)
	if err := checkWhole(st, inGraph); err != nil {
		return nil, err
	}
	return st, nil
}

// parseIDMap fills st's id maps and key metadata from the id map section of a snapshot.
func (st *state) parseIDMap(b []byte, nextKey, live uint64) error {
	st.ids = make(map[string]uint64, live)
	st.entries = make([]entry, nextKey)
	st.meta = newKeyMeta()
	d := &decoder{b: b}
	for range live {
		var key uint64
		if kb := d.take(8); kb != nil {
			key = binary.LittleEndian.Uint64(kb)
		}
		id, part := d.str(), d.str()
		if d.err != nil {
			return fmt.Errorf("%w: reading id map: %w", hnsw.ErrCorrupt, d.err)
		}
		if key >= nextKey || st.entries[key].live {
			return fmt.Errorf("%w: bad key %d in id map", hnsw.ErrCorrupt, key)
		}
		e := entry{id: id, part: st.intern(part), slot: uint16(slots.Of(slots.KeyOf(id, part))), live: true}
		st.entries[key] = e
		st.ids[id] = key
		st.meta.set(key, e.part, e.slot)
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d bytes after the id map", hnsw.ErrCorrupt, len(d.b))
	}
	return nil
}

// readIndex reads the tail and the index of a snapshot, and checks the stream ends
// there.
func readIndex(br *bufio.Reader, cfg hnsw.Config, nextKey uint64) (*hnsw.Index, []tailPut, error) {
	var kb [8]byte
	if _, err := io.ReadFull(br, kb[:]); err != nil {
		return nil, nil, fmt.Errorf("reading tail: %w", err)
	}
	ntail := binary.LittleEndian.Uint64(kb[:])
	if ntail > nextKey {
		return nil, nil, fmt.Errorf("%w: a tail of %d vectors for %d keys", hnsw.ErrCorrupt, ntail, nextKey)
	}
	var puts []tailPut
	vb := make([]byte, 8+4*cfg.Dim)
	for range ntail {
		if _, err := io.ReadFull(br, vb); err != nil {
			return nil, nil, fmt.Errorf("reading tail: %w", err)
		}
		key := binary.LittleEndian.Uint64(vb)
		if key >= nextKey {
			return nil, nil, fmt.Errorf("%w: tail vector of key %d of %d", hnsw.ErrCorrupt, key, nextKey)
		}
		vec := make([]float32, cfg.Dim)
		for i := range vec {
			vec[i] = math.Float32frombits(binary.LittleEndian.Uint32(vb[8+4*i:]))
		}
		puts = append(puts, tailPut{key: key, raw: vec})
	}
	// The configured quantization wins over the snapshot's: a changed setting takes
	// effect on the next start (a snapshot holds float32 vectors either way).
	idx, err := hnsw.ReadWith(br, hnsw.ReadOptions{Quantization: cfg.Quantization, Rerank: cfg.Rerank, VectorDir: cfg.VectorDir})
	if err != nil {
		return nil, nil, fmt.Errorf("reading index: %w", err)
	}
	// A snapshot's checksum is checked when its reader reaches the end (and a replication
	// stream is cut by the sender if it fails), so the state counts only after a clean EOF.
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		if err == nil {
			err = fmt.Errorf("%w: trailing bytes after the index", hnsw.ErrCorrupt)
		}
		idx.Close()
		return nil, nil, fmt.Errorf("reading snapshot end: %w", err)
	}
	if got := idx.Config(); got.Dim != cfg.Dim || got.Metric != cfg.Metric {
		idx.Close()
		return nil, nil, fmt.Errorf("snapshot holds dimension %d %s, configured %d %s: %w",
			got.Dim, got.Metric, cfg.Dim, cfg.Metric, hnsw.ErrDimension)
	}
	return idx, puts, nil
}

// checkWhole verifies that every live id of st has a vector in the graph or the tail,
// and the graph holds no other key (inGraph of the tail's keys are in it too).
func checkWhole(st *state, inGraph int) error {
	if want := st.live - int(st.tail.Len()) + inGraph; st.idx.Len() != want {
		return fmt.Errorf("%w: the graph holds %d vectors, the id map and the tail say %d", hnsw.ErrCorrupt, st.idx.Len(), want)
	}
	for key, e := range st.entries {
		if !e.live || st.idx.Contains(uint64(key)) {
			continue
		}
		if _, ok := st.tail.get(uint64(key)); !ok {
			return fmt.Errorf("%w: id %q has no vector", hnsw.ErrCorrupt, e.id)
		}
	}
	return nil
}
