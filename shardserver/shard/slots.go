package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
	"github.com/annshard/annshard/shardserver/wal"
)

// slotState is the slot ownership of this shard: one state machine, changed only by
// the methods below, all under one epoch rule (see the package doc, "Slot ownership").
//
//   - owned: slots this shard answers for; reads see only them (Store.SetVisible).
//   - frozen (a subset of owned): writes to them get `moved`; reads still see them.
//   - importing (disjoint from owned): an import job copies them in; no client write,
//     no read sees them until the job is finished.
//
// Writers hold gate read-locked from their ownership check until their record is
// applied; a change that takes slots away from writers (freeze, drop, a new table or
// set) takes gate exclusively, so once it returns no write to those slots is in flight
// and every one they accepted is at or below the store's applied sequence number.
type slotState struct {
	gate      sync.RWMutex
	mu        sync.Mutex // guards the fields below; held briefly, also under gate
	owned     slots.Set
	frozen    slots.Set
	importing slots.Set
	epoch     uint64
	imports   map[string]*importJob
	// away are the slots given up by a newer table and not dropped yet, by the epoch
	// that took them: a router still at an older epoch reads them here.
	away map[uint64]slots.Set
	path string // where the state persists across restarts
	// visible is told the owned set after every change (the store hides the rest).
	visible func(owned slots.Set)
}

type slotFile struct {
	Owned     string                `json:"owned"`
	Frozen    string                `json:"frozen"`
	Importing string                `json:"importing,omitempty"`
	Epoch     uint64                `json:"epoch"`
	Imports   []client.ImportStatus `json:"imports,omitempty"`
}

// loadSlots reads the persisted slot state; a new shard owns every slot at epoch 0.
func loadSlots(path string) (*slotState, error) {
	st := &slotState{owned: slots.All(), path: path, imports: map[string]*importJob{}, visible: func(slots.Set) {}}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading slot state: %w", err)
	}
	var f slotFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parsing slot state %s: %w", path, err)
	}
	for _, x := range []struct {
		text string
		set  *slots.Set
	}{{f.Owned, &st.owned}, {f.Frozen, &st.frozen}, {f.Importing, &st.importing}} {
		if *x.set, err = slots.ParseSet(x.text); err != nil {
			return nil, fmt.Errorf("parsing slot state %s: %w", path, err)
		}
	}
	st.epoch = f.Epoch
	for _, is := range f.Imports {
		set, err := slots.ParseSet(is.Slots)
		if err != nil {
			return nil, fmt.Errorf("parsing slot state %s: import %s: %w", path, is.ID, err)
		}
		st.imports[is.ID] = &importJob{status: is, set: set}
	}
	return st, nil
}

// saveLocked persists the state durably (temp file, fsync, rename, fsync of the
// directory) and tells the store which slots are visible; callers hold mu.
func (st *slotState) saveLocked() error {
	f := slotFile{Owned: st.owned.String(), Frozen: st.frozen.String(), Importing: st.importing.String(), Epoch: st.epoch}
	for _, j := range st.imports {
		f.Imports = append(f.Imports, j.status)
	}
	slices.SortFunc(f.Imports, func(a, b client.ImportStatus) int { return strings.Compare(a.ID, b.ID) })
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encoding slot state: %w", err)
	}
	st.visible(st.owned)
	if err := writeFileDurable(st.path, b); err != nil {
		return fmt.Errorf("writing slot state: %w", err)
	}
	return nil
}

// writeFileDurable replaces path with data so that a crash leaves the old or the new
// content, never a mix or nothing: temp file, fsync, rename, fsync of the directory.
func writeFileDurable(path string, data []byte) error {
	tmp := path + ".tmp"
	err := func() error {
		f, err := os.Create(tmp)
		if err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		d, err := os.Open(filepath.Dir(path))
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}()
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func (st *slotState) snapshot() client.SlotsState {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.snapshotLocked()
}

// snapshotLocked is snapshot for callers that hold mu.
func (st *slotState) snapshotLocked() client.SlotsState {
	return client.SlotsState{Owned: st.owned.String(), Frozen: st.frozen.String(), Importing: st.importing.String(), Epoch: st.epoch}
}

func (st *slotState) currentEpoch() uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.epoch
}

// check returns a moved error for the first slot this shard does not take writes for.
func (st *slotState) check(slotList func(yield func(int) bool)) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	for slot := range slotList {
		if !st.owned.Has(slot) || st.frozen.Has(slot) {
			why := "is not owned by this shard"
			switch {
			case st.frozen.Has(slot):
				why = "is frozen for a move"
			case st.importing.Has(slot):
				why = "is being imported by this shard"
			}
			return &client.APIError{Code: client.CodeMoved, Epoch: st.epoch,
				Message: fmt.Sprintf("slot %d %s (epoch %d)", slot, why, st.epoch)}
		}
	}
	return nil
}

// hiddenFor is the slots a read must not see: for a request without client.EpochHeader,
// every slot not owned; for a router's read at epoch E, also showing the slots this
// shard holds for E (see client.EpochHeader): importing slots once E is past their
// import's epoch, slots handed away at an epoch after E, and everything while E is
// newer than the shard's epoch. nil when nothing is hidden.
func (s *Server) hiddenFor(r *http.Request) *slots.Set {
	var e uint64
	if h := r.Header.Get(client.EpochHeader); h != "" {
		e, _ = strconv.ParseUint(h, 10, 64)
	}
	st := s.slots
	st.mu.Lock()
	defer st.mu.Unlock()
	if e > st.epoch {
		return nil
	}
	visible := st.owned
	if e > 0 {
		for _, j := range st.imports {
			if j.active() && j.status.Epoch < e {
				visible = visible.Union(j.set)
			}
		}
		for at, away := range st.away {
			if e < at {
				visible = visible.Union(away)
			}
		}
	}
	if visible == slots.All() {
		return nil
	}
	hidden := slots.All().Minus(visible)
	return &hidden
}

// stale refuses a request made at an epoch older than the shard's: whatever it was
// based on may have been undone by the newer table. Callers hold mu.
func (st *slotState) staleLocked(epoch uint64, what string) error {
	if epoch < st.epoch {
		return &client.APIError{Code: client.CodeConflict, Epoch: st.epoch,
			Message: fmt.Sprintf("%s at epoch %d refused: the shard is at epoch %d", what, epoch, st.epoch)}
	}
	return nil
}

// change runs f on the state under gate (exclusive: no write in flight) and mu, and
// persists the result when f succeeds. Import jobs whose slots f made owned are stopped
// first and marked done by own (see finishOwnedLocked).
func (st *slotState) change(f func() error) error {
	st.gate.Lock()
	defer st.gate.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := f(); err != nil {
		return err
	}
	return st.saveLocked()
}

// replaceLocked installs a new owned set (and frozen subset) at epoch: frozen slots no
// longer owned are gone with them (a frozen slot is never unfrozen by a handover), and
// importing slots now owned are handed over (their jobs finish). Callers hold gate
// and mu.
func (st *slotState) replaceLocked(owned, frozen slots.Set, epoch uint64) {
	if lost := st.owned.Minus(owned); hasAny(lost) {
		if st.away == nil {
			st.away = map[uint64]slots.Set{}
		}
		st.away[epoch] = st.away[epoch].Union(lost)
	}
	st.owned, st.frozen, st.epoch = owned, frozen.Intersect(owned), epoch
	st.finishOwnedLocked()
}

// finishOwnedLocked ends the import jobs whose slots are owned now: Done when all are,
// Failed when only some are (the table split what the job was moving).
func (st *slotState) finishOwnedLocked() {
	for _, j := range st.imports {
		if !j.active() {
			continue
		}
		overlap := j.set.Intersect(st.owned)
		switch {
		case overlap == j.set:
			j.stopLocked(client.ImportDone, fmt.Sprintf("handed over at epoch %d", st.epoch))
		case hasAny(overlap):
			j.stopLocked(client.ImportFailed, fmt.Sprintf("the table at epoch %d gives this shard only slots %s of the import", st.epoch, overlap.String()))
		}
	}
	st.importing = st.importing.Minus(st.owned)
}

// set replaces the owned and frozen sets (POST /v1/internal/slots); an epoch older than
// the current one is refused.
func (st *slotState) set(owned, frozen slots.Set, epoch uint64) error {
	return st.change(func() error {
		if err := st.staleLocked(epoch, "setting slots"); err != nil {
			return err
		}
		st.replaceLocked(owned, frozen, epoch)
		return nil
	})
}

// adopt takes this shard's slots from a routing table newer than what it knows (an
// older or equal epoch is ignored: the shard may have learnt it by set or freeze);
// frozen slots it still owns stay frozen. The check and the change are one step under
// the locks, so a freeze in between cannot be lost. (adoptTable, the caller, skips an
// old table before it takes any lock.)
func (st *slotState) adopt(owned slots.Set, epoch uint64) error {
	return st.change(func() error {
		if epoch <= st.epoch {
			return nil
		}
		st.replaceLocked(owned, st.frozen, epoch)
		return nil
	})
}

// freeze refuses further writes to set, which must be owned, at epoch (not older than
// the shard's). When it returns no write to them is in flight. Freeze, unfreeze, drop
// and an import's finish never move the epoch: only a table (or POST slots) does, so a
// shard that has not adopted the operator's newest table yet still adopts it.
func (st *slotState) freeze(set slots.Set, epoch uint64) error {
	return st.change(func() error {
		if err := st.staleLocked(epoch, "freezing slots"); err != nil {
			return err
		}
		if notOwned := set.Minus(st.owned); hasAny(notOwned) {
			return &client.APIError{Code: client.CodeConflict, Epoch: st.epoch,
				Message: fmt.Sprintf("cannot freeze slots %s: not owned at epoch %d", notOwned.String(), st.epoch)}
		}
		st.frozen = st.frozen.Union(set)
		return nil
	})
}

// unfreeze takes writes to set again; refused once the shard's epoch is past epoch (the
// handover that froze them may have happened).
func (st *slotState) unfreeze(set slots.Set, epoch uint64) error {
	return st.change(func() error {
		if err := st.staleLocked(epoch, "unfreezing slots"); err != nil {
			return err
		}
		st.frozen = st.frozen.Minus(set)
		return nil
	})
}

// droppedLocked gives up set after its vectors were deleted; epoch is the request's
// (not older than the shard's, checked by the caller). Callers hold gate.
func (st *slotState) droppedLocked(set slots.Set, epoch uint64) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.owned, st.frozen = st.owned.Minus(set), st.frozen.Minus(set)
	for e, away := range st.away {
		if away = away.Minus(set); hasAny(away) {
			st.away[e] = away
		} else {
			delete(st.away, e)
		}
	}
	return st.saveLocked()
}

// watchRoutingFile re-reads the routing table file whenever it changes (a mounted
// ConfigMap is replaced by symlink swap, so it polls the content's modification time)
// and adopts this shard's slots when the table's epoch is newer.
func (s *Server) watchRoutingFile(ctx context.Context, every time.Duration) {
	var last time.Time
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if fi, err := os.Stat(s.cfg.RoutingFile); err == nil && !fi.ModTime().Equal(last) {
			if err := s.loadRoutingFile(); err != nil {
				slog.Warn("Routing file not applied", "file", s.cfg.RoutingFile, "err", err)
			} else {
				last = fi.ModTime()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) loadRoutingFile() error {
	b, err := os.ReadFile(filepath.Clean(s.cfg.RoutingFile))
	if err != nil {
		return fmt.Errorf("reading routing file: %w", err)
	}
	tab, err := slots.Parse(b)
	if err != nil {
		return fmt.Errorf("parsing routing file: %w", err)
	}
	return s.adoptTable(tab)
}

// adoptTable takes this shard's slots from a routing table newer than what it knows
// (slotState.adopt). Import jobs whose slots the table gives to this shard are stopped
// before the slots take writes, so no older imported record lands after a new write.
func (s *Server) adoptTable(tab slots.Table) error {
	owned := tab.SlotsOf(s.cfg.ShardIndex)
	if tab.Epoch <= s.slots.currentEpoch() {
		return nil
	}
	return s.pauseImports(overlapping(owned), func() error { return s.slots.adopt(owned, tab.Epoch) })
}

func hasAny(set slots.Set) bool { return !set.IsEmpty() }

func (s *Server) decodeSlots(w http.ResponseWriter, r *http.Request) (client.SlotsRequest, slots.Set, error) {
	var req client.SlotsRequest
	if err := decodeJSON(s.body(w, r).Body, &req); err != nil {
		return req, slots.Set{}, err
	}
	set, err := slots.ParseSet(req.Slots)
	if err != nil {
		return req, slots.Set{}, invalid("slots: %v", err)
	}
	return req, set, nil
}

func (s *Server) handleSlotsGet(w http.ResponseWriter, r *http.Request) {
	st := s.slots.snapshot()
	st.Seq = s.store.Applied()
	writeJSON(w, http.StatusOK, st)
}

// handleSlotsSet sets the owned slots (and the frozen subset) at an epoch.
func (s *Server) handleSlotsSet(w http.ResponseWriter, r *http.Request) {
	req, owned, err := s.decodeSlots(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	frozen, err := slots.ParseSet(req.Frozen)
	if err != nil {
		writeError(w, invalid("frozen: %v", err))
		return
	}
	err = s.pauseImports(overlapping(owned), func() error { return s.slots.set(owned, frozen, req.Epoch) })
	if err != nil {
		writeError(w, err)
		return
	}
	s.handleSlotsGet(w, r)
}

// handleSlotsFreeze refuses further writes to the slots (moved) at the given epoch. It
// returns once no write to them is in flight; Seq in the answer covers every write they
// accepted, so the destination's copy is complete once it has applied the source's
// records up to Seq.
func (s *Server) handleSlotsFreeze(w http.ResponseWriter, r *http.Request) {
	req, set, err := s.decodeSlots(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.slots.freeze(set, req.Epoch); err != nil {
		writeError(w, err)
		return
	}
	s.handleSlotsGet(w, r)
}

// handleSlotsUnfreeze takes writes to the slots again: the rollback of a handover that
// did not happen. Refused once the shard's epoch is past the request's.
func (s *Server) handleSlotsUnfreeze(w http.ResponseWriter, r *http.Request) {
	req, set, err := s.decodeSlots(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.slots.unfreeze(set, req.Epoch); err != nil {
		writeError(w, err)
		return
	}
	s.handleSlotsGet(w, r)
}

// handleSlotsDrop deletes every vector in the slots through the WAL (so replicas drop
// them too) and gives the slots up. Only slots given away or frozen are dropped: not
// importing ones (cancel the import) nor ones this shard serves writes for.
func (s *Server) handleSlotsDrop(w http.ResponseWriter, r *http.Request) {
	req, set, err := s.decodeSlots(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	s.slots.gate.Lock()
	defer s.slots.gate.Unlock()
	s.slots.mu.Lock()
	busy := set.Intersect(s.slots.importing)
	live := set.Intersect(s.slots.owned).Minus(s.slots.frozen)
	s.slots.mu.Unlock()
	if hasAny(busy) {
		writeError(w, &client.APIError{Code: client.CodeConflict, Message: fmt.Sprintf("slots %s are being imported: cancel the import instead", busy.String())})
		return
	}
	if hasAny(live) {
		// A stale drop must not delete slots this shard serves (they may have come back).
		writeError(w, &client.APIError{Code: client.CodeConflict, Message: fmt.Sprintf("slots %s are owned and take writes: freeze them or give them away first", live.String())})
		return
	}
	seq, n, err := s.store.Write(r.Context(), record{op: opDrop, drop: set})
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.slots.droppedLocked(set, req.Epoch); err != nil {
		writeError(w, err)
		return
	}
	st := s.slots.snapshot()
	st.Dropped, st.Seq = n, seq
	writeJSON(w, http.StatusOK, st)
}

// slotHeartbeatEvery is how often a live slot WAL stream reports its position: it
// bounds how long a handover waits for the destination to see the freeze's seq.
const slotHeartbeatEvery = 50 * time.Millisecond

// holdLinger is how long a slot stream's WAL hold outlives the stream: a destination
// that restarts reconnects within it and finds the records it needs.
const holdLinger = 10 * time.Minute

// walHolds are the oldest WAL records slot streams still need, by slot set (one import
// per slot set): Snapshot trims nothing from the oldest on (Store.retainFrom).
type walHolds struct {
	mu sync.Mutex
	m  map[string]*walHold
}

type walHold struct {
	from  uint64
	open  int
	until time.Time
}

// hold keeps the WAL from seq from on for key (replacing its earlier hold) until the
// returned release is called and holdLinger has passed.
func (h *walHolds) hold(key string, from uint64) (release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]*walHold{}
	}
	hd := h.m[key]
	if hd == nil {
		hd = &walHold{}
		h.m[key] = hd
	}
	hd.from = max(from, 1)
	hd.open++
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		hd.open--
		hd.until = time.Now().Add(holdLinger)
	}
}

// oldest is the oldest record a hold keeps, 0 when none does.
func (h *walHolds) oldest() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var oldest uint64
	now := time.Now()
	for key, hd := range h.m {
		if hd.open == 0 && now.After(hd.until) {
			delete(h.m, key)
			continue
		}
		if oldest == 0 || hd.from < oldest {
			oldest = hd.from
		}
	}
	return oldest
}

func querySlots(r *http.Request) (slots.Set, error) {
	set, err := slots.ParseSet(r.URL.Query().Get("slots"))
	if err != nil {
		return set, invalid("slots: %v", err)
	}
	return set, nil
}

// toWire converts WAL items to the wire form (vectors as base64, the compact form).
func toWire(items []upsertItem) []client.Vector {
	out := make([]client.Vector, len(items))
	for i, it := range items {
		out[i] = client.Vector{ID: it.id, Partition: it.partition, VectorB64: client.EncodeB64(it.vec)}
	}
	return out
}

// handleSlotsExport streams the stored vectors of ?slots= as SlotRecord lines. The
// SeqHeader (and every line's seq) is the applied sequence number when the export began:
// the vectors reflect at least every record up to it, and replaying the slot WAL stream
// from seq+1 over them converges, because upserts and deletes are idempotent.
func (s *Server) handleSlotsExport(w http.ResponseWriter, r *http.Request) {
	set, err := querySlots(r)
	if err != nil {
		writeError(w, err)
		return
	}
	seq := s.store.Applied()
	// The copy continues with the WAL after seq: keep it until the tail takes over.
	defer s.holds.hold(set.String(), seq+1)()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set(SeqHeader, strconv.FormatUint(seq, 10))
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	err = s.store.exportSlots(&set, 256, func(items []upsertItem) error {
		return enc.Encode(client.SlotRecord{Seq: seq, Upserts: toWire(items)})
	})
	if err != nil {
		panic(http.ErrAbortHandler) // a cut stream must not look complete
	}
	_ = enc.Encode(client.SlotRecord{Seq: seq}) // end marker: a heartbeat at the export seq
}

// handleSlotsWAL streams, as SlotRecord lines, the writes to ?slots= in records after
// ?from=; with ?until=SEQ it ends after that record, otherwise it follows the live log.
func (s *Server) handleSlotsWAL(w http.ResponseWriter, r *http.Request) {
	set, err := querySlots(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var until uint64
	if u := r.URL.Query().Get("until"); u != "" {
		if until, err = strconv.ParseUint(u, 10, 64); err != nil {
			writeError(w, invalid("until: %v", err))
			return
		}
	}
	from, ok := s.parseFrom(w, r)
	if !ok {
		return
	}
	ctx, cancel := s.streamContext(r)
	defer cancel()
	log := s.store.Log()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	rc := http.NewResponseController(w)
	emit := func(rec client.SlotRecord) error {
		mu.Lock()
		defer mu.Unlock()
		if err := enc.Encode(rec); err != nil {
			return err
		}
		return rc.Flush()
	}
	// pos is how far Follow has read: every write to the slots at or below it was
	// emitted before a heartbeat that carries it.
	var pos atomic.Uint64
	pos.Store(from - 1)
	if until == 0 {
		defer s.holds.hold(set.String(), from)()
		defer startHeartbeatsEvery(ctx, cancel, slotHeartbeatEvery, func() error {
			return emit(client.SlotRecord{Seq: pos.Load(), Last: log.LastSeq()})
		})()
	} else if until < from {
		_ = emit(client.SlotRecord{Seq: until}) // nothing to send: just the end marker
		return
	}
	errDone := errors.New("reached until")
	err = log.Follow(ctx, from, func(rec wal.Record) error {
		dec, err := decodeRecord(rec.Data)
		if err != nil {
			return fmt.Errorf("record %d: %w", rec.Seq, err)
		}
		defer pos.Store(rec.Seq)
		if dec, ok := filterSlots(dec, &set); ok {
			out := client.SlotRecord{Seq: rec.Seq, Upserts: toWire(dec.upserts), DeletePartition: dec.partition}
			for _, d := range dec.deletes {
				out.Deletes = append(out.Deletes, d.id)
			}
			if err := emit(out); err != nil {
				return err
			}
		}
		if until != 0 && rec.Seq >= until {
			return errDone
		}
		return nil
	})
	if until != 0 && errors.Is(err, errDone) {
		_ = emit(client.SlotRecord{Seq: until})
		return
	}
	if err != nil && ctx.Err() == nil {
		panic(http.ErrAbortHandler)
	}
}
