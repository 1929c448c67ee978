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
	"strconv"
	"sync"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
	"github.com/annshard/annshard/shardserver/wal"
)

// slotState is which slots this shard takes writes for. Writers hold gate read-locked
// from their ownership check until their record is applied; freeze and drop take it
// exclusively, so once a freeze returns no write to those slots is in flight and every
// accepted one is at or below the sequence number it reports.
type slotState struct {
	gate   sync.RWMutex
	mu     sync.Mutex // guards the fields below; held briefly, also under gate
	owned  slots.Set
	frozen slots.Set
	epoch  uint64
	path   string // where the state persists across restarts
}

type slotFile struct {
	Owned  string `json:"owned"`
	Frozen string `json:"frozen"`
	Epoch  uint64 `json:"epoch"`
}

// loadSlots reads the persisted slot state; a new shard owns every slot at epoch 0.
func loadSlots(path string) (*slotState, error) {
	st := &slotState{owned: slots.All(), path: path}
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
	if st.owned, err = slots.ParseSet(f.Owned); err != nil {
		return nil, fmt.Errorf("parsing slot state %s: %w", path, err)
	}
	if st.frozen, err = slots.ParseSet(f.Frozen); err != nil {
		return nil, fmt.Errorf("parsing slot state %s: %w", path, err)
	}
	st.epoch = f.Epoch
	return st, nil
}

// saveLocked persists the state by temp file and rename; callers hold mu.
func (st *slotState) saveLocked() error {
	b, err := json.Marshal(slotFile{Owned: st.owned.String(), Frozen: st.frozen.String(), Epoch: st.epoch})
	if err != nil {
		return fmt.Errorf("encoding slot state: %w", err)
	}
	tmp := st.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("writing slot state: %w", err)
	}
	if err := os.Rename(tmp, st.path); err != nil {
		return fmt.Errorf("writing slot state: %w", err)
	}
	return nil
}

func (st *slotState) snapshot() client.SlotsState {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.snapshotLocked()
}

// snapshotLocked is snapshot for callers that hold mu.
func (st *slotState) snapshotLocked() client.SlotsState {
	return client.SlotsState{Owned: st.owned.String(), Frozen: st.frozen.String(), Epoch: st.epoch}
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
			if st.frozen.Has(slot) {
				why = "is frozen for a move"
			}
			return &client.APIError{Code: client.CodeMoved, Epoch: st.epoch,
				Message: fmt.Sprintf("slot %d %s (epoch %d)", slot, why, st.epoch)}
		}
	}
	return nil
}

// set replaces the owned and frozen sets; an epoch older than the current one is refused
// so a stale caller cannot undo a newer table.
func (st *slotState) set(owned, frozen slots.Set, epoch uint64) error {
	st.gate.Lock()
	defer st.gate.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	if epoch < st.epoch {
		return &client.APIError{Code: client.CodeConflict, Epoch: st.epoch,
			Message: fmt.Sprintf("epoch %d is older than the shard's %d", epoch, st.epoch)}
	}
	st.owned, st.frozen, st.epoch = owned, frozen.Minus(slots.All().Minus(owned)), epoch
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

// adoptTable takes this shard's slots from a routing table newer than what it knows;
// frozen slots it still owns stay frozen.
func (s *Server) adoptTable(tab slots.Table) error {
	if tab.Epoch <= s.slots.currentEpoch() {
		return nil
	}
	s.slots.mu.Lock()
	frozen := s.slots.frozen
	s.slots.mu.Unlock()
	return s.slots.set(tab.SlotsOf(s.cfg.ShardIndex), frozen, tab.Epoch)
}

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
	if err := s.slots.set(owned, frozen, req.Epoch); err != nil {
		writeError(w, err)
		return
	}
	s.handleSlotsGet(w, r)
}

// handleSlotsFreeze refuses further writes to the slots (moved, at the given epoch if it
// is newer). It returns once no write to them is in flight; Seq in the answer covers
// every write they accepted, so a migration's final WAL tail can stop there.
func (s *Server) handleSlotsFreeze(w http.ResponseWriter, r *http.Request) {
	req, set, err := s.decodeSlots(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	s.slots.gate.Lock()
	s.slots.mu.Lock()
	s.slots.frozen = s.slots.frozen.Union(set)
	s.slots.epoch = max(s.slots.epoch, req.Epoch)
	err = s.slots.saveLocked()
	s.slots.mu.Unlock()
	s.slots.gate.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	s.handleSlotsGet(w, r)
}

// handleSlotsDrop deletes every vector in the slots through the WAL (so replicas drop
// them too) and gives the slots up.
func (s *Server) handleSlotsDrop(w http.ResponseWriter, r *http.Request) {
	req, set, err := s.decodeSlots(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	s.slots.gate.Lock()
	defer s.slots.gate.Unlock()
	seq, n, err := s.store.Write(r.Context(), record{op: opDrop, drop: set})
	if err != nil {
		writeError(w, err)
		return
	}
	s.slots.mu.Lock()
	s.slots.owned = s.slots.owned.Minus(set)
	s.slots.frozen = s.slots.frozen.Minus(set)
	s.slots.epoch = max(s.slots.epoch, req.Epoch)
	err = s.slots.saveLocked()
	st := s.slots.snapshotLocked()
	st.Dropped, st.Seq = n, seq
	s.slots.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
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
	if until == 0 {
		defer startHeartbeats(ctx, cancel, func() error { return emit(client.SlotRecord{Seq: log.LastSeq()}) })()
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
