package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

// importJob is one import of a slot set from a source primary (see the package doc,
// "Slot migration"). status is guarded by slotState.mu; cancel and done by importMu.
type importJob struct {
	status client.ImportStatus
	set    slots.Set
	cancel context.CancelFunc // set while its goroutine runs
	done   chan struct{}      // closed when that goroutine returns
}

// active reports whether the job still has work: copying or catching up.
func (j *importJob) active() bool {
	return j.status.Phase == client.ImportCopying || j.status.Phase == client.ImportCatchingUp
}

// stopLocked ends the job in phase; its goroutine, if any, sees the phase and returns.
// Callers hold slotState.mu.
func (j *importJob) stopLocked(phase, msg string) {
	j.status.Phase, j.status.Message = phase, msg
}

const (
	// importBatch is how many vectors one write of an import carries at most.
	importBatch = 1024
	// importSaveEvery is how often a job's progress is persisted while it catches up.
	importSaveEvery = time.Second
	// importAppliers is how many export batches are applied at once.
	importAppliers = 2
	// maxImports bounds the finished jobs kept for status queries.
	maxImports = 64
)

// errImportStopped ends a job's goroutine: the job left Copying and CatchingUp.
var errImportStopped = errors.New("import stopped")

// handleImportStart starts an import job (idempotent by ID).
func (s *Server) handleImportStart(w http.ResponseWriter, r *http.Request) {
	var req client.ImportRequest
	if err := decodeJSON(s.body(w, r).Body, &req); err != nil {
		writeError(w, err)
		return
	}
	st, err := s.startImport(req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) startImport(req client.ImportRequest) (client.ImportStatus, error) {
	set, err := slots.ParseSet(req.Slots)
	if err != nil {
		return client.ImportStatus{}, invalid("slots: %v", err)
	}
	switch {
	case req.ID == "" || len(req.ID) > 253:
		return client.ImportStatus{}, invalid("id must be 1 to 253 characters")
	case set.Len() == 0:
		return client.ImportStatus{}, invalid("slots: empty set")
	case req.Source == "":
		return client.ImportStatus{}, invalid("source: the base URL of the source primary is required")
	}
	st := s.slots
	st.mu.Lock()
	if j, ok := st.imports[req.ID]; ok {
		defer st.mu.Unlock()
		if j.status.Slots != set.String() || j.status.Source != req.Source || j.status.Epoch != req.Epoch {
			return client.ImportStatus{}, &client.APIError{Code: client.CodeConflict,
				Message: fmt.Sprintf("import %s exists with slots %s from %s at epoch %d", req.ID, j.status.Slots, j.status.Source, j.status.Epoch)}
		}
		return j.status, nil
	}
	st.mu.Unlock()
	var out client.ImportStatus
	err = st.change(func() error {
		if err := st.staleLocked(req.Epoch, "importing slots"); err != nil {
			return err
		}
		if _, ok := st.imports[req.ID]; ok {
			return &client.APIError{Code: client.CodeConflict, Message: "import " + req.ID + " started concurrently"}
		}
		if owned := set.Intersect(st.owned); hasAny(owned) {
			return &client.APIError{Code: client.CodeConflict, Epoch: st.epoch,
				Message: fmt.Sprintf("cannot import slots %s: this shard owns them at epoch %d", owned.String(), st.epoch)}
		}
		if busy := set.Intersect(st.importing); hasAny(busy) {
			return &client.APIError{Code: client.CodeConflict,
				Message: fmt.Sprintf("slots %s are being imported by another job", busy.String())}
		}
		st.pruneImportsLocked()
		j := &importJob{set: set, status: client.ImportStatus{ID: req.ID, Slots: set.String(), Source: req.Source,
			Epoch: req.Epoch, Phase: client.ImportCopying}}
		st.imports[req.ID] = j
		st.importing = st.importing.Union(set)
		out = j.status
		return nil
	})
	if err != nil {
		return client.ImportStatus{}, err
	}
	s.resumeImports()
	return out, nil
}

// pruneImportsLocked forgets the oldest finished jobs beyond maxImports.
func (st *slotState) pruneImportsLocked() {
	for len(st.imports) >= maxImports {
		var oldest string
		for id, j := range st.imports {
			if !j.active() && (oldest == "" || id < oldest) {
				oldest = id
			}
		}
		if oldest == "" {
			return
		}
		delete(st.imports, oldest)
	}
}

func (s *Server) handleImportGet(w http.ResponseWriter, r *http.Request) {
	st, ok := s.importStatus(r.PathValue("id"))
	if !ok {
		writeError(w, &client.APIError{Code: client.CodeNotFound, Message: "no import " + r.PathValue("id")})
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) importStatus(id string) (client.ImportStatus, bool) {
	s.slots.mu.Lock()
	defer s.slots.mu.Unlock()
	j, ok := s.slots.imports[id]
	if !ok {
		return client.ImportStatus{}, false
	}
	return j.status, true
}

// handleImportCancel stops a job and drops its partial copy; the slots are no longer
// importing. A job that is Done cannot be cancelled (its slots are owned here).
func (s *Server) handleImportCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	st, ok := s.importStatus(id)
	switch {
	case !ok:
		writeError(w, &client.APIError{Code: client.CodeNotFound, Message: "no import " + id})
		return
	case st.Phase == client.ImportDone:
		writeError(w, &client.APIError{Code: client.CodeConflict, Message: "import " + id + " is done: its slots are owned by this shard"})
		return
	case st.Phase == client.ImportCancelled:
		writeJSON(w, http.StatusOK, st)
		return
	}
	set, _ := slots.ParseSet(st.Slots)
	var out client.ImportStatus
	err := s.pauseImports(func(j *importJob) bool { return j.status.ID == id }, func() error {
		// Importing slots take no client write, and the job is stopped: nothing else
		// writes to them meanwhile. Slots a table gave this shard meanwhile (a Failed
		// job) are its own now and stay. Tables wait for importMu, held here.
		s.slots.mu.Lock()
		drop := set.Minus(s.slots.owned)
		s.slots.mu.Unlock()
		if _, _, err := s.store.Write(r.Context(), record{op: opDrop, drop: drop}); err != nil {
			return err
		}
		return s.slots.change(func() error {
			j := s.slots.imports[id]
			if j.status.Phase == client.ImportDone {
				return &client.APIError{Code: client.CodeConflict, Message: "import " + id + " finished meanwhile"}
			}
			j.stopLocked(client.ImportCancelled, "cancelled; the partial copy was dropped")
			s.slots.importing = s.slots.importing.Minus(j.set.Minus(s.slots.owned))
			out = j.status
			return nil
		})
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleImportFinish hands the job's slots over at the given epoch: owned and visible.
func (s *Server) handleImportFinish(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutSuffix(r.PathValue("id"), ":finish")
	if !ok {
		writeError(w, &client.APIError{Code: client.CodeNotFound, Message: "no such endpoint: POST " + r.URL.Path + " (did you mean :finish?)"})
		return
	}
	var req client.FinishImportRequest
	if err := decodeJSON(s.body(w, r).Body, &req); err != nil {
		writeError(w, err)
		return
	}
	st, ok := s.importStatus(id)
	switch {
	case !ok:
		writeError(w, &client.APIError{Code: client.CodeNotFound, Message: "no import " + id})
		return
	case st.Phase == client.ImportDone:
		writeJSON(w, http.StatusOK, st)
		return
	case st.Phase != client.ImportCatchingUp:
		writeError(w, &client.APIError{Code: client.CodeConflict, Message: fmt.Sprintf("import %s is %s, not catching up", id, st.Phase)})
		return
	case req.Epoch <= st.Epoch:
		writeError(w, invalid("epoch %d: the handover epoch must be newer than the import's %d", req.Epoch, st.Epoch))
		return
	}
	// The job stops before the slots take writes: no older imported record may land
	// after a new write.
	var out client.ImportStatus
	err := s.pauseImports(func(j *importJob) bool { return j.status.ID == id }, func() error {
		return s.slots.change(func() error {
			sl := s.slots
			j := sl.imports[id]
			if j.status.Phase == client.ImportDone {
				out = j.status
				return nil
			}
			if !j.active() {
				return &client.APIError{Code: client.CodeConflict, Message: fmt.Sprintf("import %s is %s", id, j.status.Phase)}
			}
			if req.Epoch < sl.epoch && hasAny(j.set.Minus(sl.owned)) {
				return &client.APIError{Code: client.CodeConflict, Epoch: sl.epoch,
					Message: fmt.Sprintf("handover at epoch %d refused: the shard is at epoch %d", req.Epoch, sl.epoch)}
			}
			// The epoch stays: only a table (or POST slots) moves it, so a table this
			// shard has not adopted yet is still newer and still adopted.
			sl.owned = sl.owned.Union(j.set)
			sl.finishOwnedLocked()
			out = j.status
			return nil
		})
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// pauseImports stops the goroutines of the jobs match selects, waits for them, and runs
// f while no job can be started; then starts again the jobs still active.
func (s *Server) pauseImports(match func(*importJob) bool, f func() error) error {
	s.importMu.Lock()
	s.slots.mu.Lock()
	var waits []chan struct{}
	for _, j := range s.slots.imports {
		if j.cancel != nil && match(j) {
			j.cancel()
			waits = append(waits, j.done)
			j.cancel = nil
		}
	}
	s.slots.mu.Unlock()
	for _, w := range waits {
		<-w
	}
	err := f()
	s.importMu.Unlock()
	s.resumeImports()
	return err
}

// overlapping selects the jobs that import any slot of set.
func overlapping(set slots.Set) func(*importJob) bool {
	return func(j *importJob) bool { return hasAny(j.set.Intersect(set)) }
}

// resumeImports starts a goroutine for every active job without one. Only a running
// primary imports (a replica gets the imported records by replication).
func (s *Server) resumeImports() {
	if s.repl != nil {
		return
	}
	s.importMu.Lock()
	defer s.importMu.Unlock()
	s.slots.mu.Lock()
	defer s.slots.mu.Unlock()
	for _, j := range s.slots.imports {
		if j.active() && j.cancel == nil && s.streams.Err() == nil {
			ctx, cancel := context.WithCancel(s.streams)
			j.cancel, j.done = cancel, make(chan struct{})
			s.importWG.Add(1)
			go func(j *importJob, done chan struct{}) {
				defer s.importWG.Done()
				defer close(done)
				s.runImport(ctx, j)
			}(j, j.done)
		}
	}
}

// runImport works on a job until it leaves Copying and CatchingUp or ctx ends,
// retrying failures with a growing pause.
func (s *Server) runImport(ctx context.Context, j *importJob) {
	src := client.New(j.status.Source, client.WithToken(s.cfg.Token), client.WithHTTPClient(streamHTTP))
	pause := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := s.importStep(ctx, j, src)
		if errors.Is(err, errImportStopped) || ctx.Err() != nil {
			return
		}
		if err == nil {
			pause = 200 * time.Millisecond
			continue
		}
		slog.Warn("Import step failed; retrying", "import", j.status.ID, "err", err, "pause", pause)
		s.slots.mu.Lock()
		j.status.Message = err.Error()
		s.slots.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// streamHTTP has no overall timeout: export and WAL streams last as long as they need.
var streamHTTP = &http.Client{Transport: http.DefaultTransport}

func (s *Server) importStep(ctx context.Context, j *importJob, src *client.Client) error {
	s.slots.mu.Lock()
	phase := j.status.Phase
	s.slots.mu.Unlock()
	switch phase {
	case client.ImportCopying:
		return s.importCopy(ctx, j, src)
	case client.ImportCatchingUp:
		err := s.importTail(ctx, j, src)
		var ae *client.APIError
		if errors.As(err, &ae) && ae.HTTPStatus == http.StatusGone {
			// The source no longer holds the WAL after our applied seq: copy afresh.
			slog.Warn("Import: the source's WAL no longer reaches back; copying afresh", "import", j.status.ID, "err", err)
			return s.saveImport(j, func(st *client.ImportStatus) {
				st.Phase, st.Message = client.ImportCopying, "the source's WAL no longer held the records needed; copying afresh"
			})
		}
		return err
	}
	return errImportStopped
}

// saveImport changes a job's status and persists it, unless the job was stopped.
func (s *Server) saveImport(j *importJob, f func(*client.ImportStatus)) error {
	s.slots.mu.Lock()
	defer s.slots.mu.Unlock()
	if !j.active() {
		return errImportStopped
	}
	f(&j.status)
	return s.slots.saveLocked()
}

// importCopy drops whatever an earlier copy left of the slots, reads the source's
// export and applies it, then moves the job to CatchingUp from the export's seq.
func (s *Server) importCopy(ctx context.Context, j *importJob, src *client.Client) error {
	if err := s.saveImport(j, func(st *client.ImportStatus) {
		st.Copied, st.Bytes, st.AppliedSeq, st.ExportSeq = 0, 0, 0, 0
		st.Copies++
	}); err != nil {
		return err
	}
	if _, _, err := s.store.Write(ctx, record{op: opDrop, drop: j.set}); err != nil {
		return fmt.Errorf("dropping an earlier partial copy: %w", err)
	}
	batches := make(chan []upsertItem, importAppliers)
	errs := make(chan error, importAppliers)
	var copied, bytes atomic.Int64
	for range importAppliers {
		go func() {
			var err error
			for items := range batches {
				if err == nil {
					_, _, err = s.store.Write(ctx, record{op: opUpsert, upserts: items})
					if err == nil {
						n, b := int64(len(items)), payloadBytes(items)
						copied.Add(n)
						bytes.Add(b)
						s.slots.mu.Lock()
						j.status.Copied += n
						j.status.Bytes += b
						s.slots.mu.Unlock()
					}
				}
			}
			errs <- err
		}()
	}
	var pending []upsertItem
	seq, err := src.ExportSlots(ctx, j.status.Slots, func(rec client.SlotRecord) error {
		items, err := s.importItems(j, rec.Upserts)
		if err != nil {
			return err
		}
		pending = append(pending, items...)
		if len(pending) >= importBatch {
			select {
			case batches <- pending:
			case <-ctx.Done():
				return ctx.Err()
			}
			pending = nil
		}
		return nil
	})
	if err == nil && len(pending) > 0 {
		batches <- pending
	}
	close(batches)
	for range importAppliers {
		err = errors.Join(err, <-errs)
	}
	if err != nil {
		return fmt.Errorf("copying from %s: %w", j.status.Source, err)
	}
	slog.Info("Import copied", "import", j.status.ID, "vectors", copied.Load(), "bytes", bytes.Load(), "exportSeq", seq)
	return s.saveImport(j, func(st *client.ImportStatus) {
		st.Phase, st.ExportSeq, st.AppliedSeq, st.SourceSeq, st.Message = client.ImportCatchingUp, seq, seq, max(st.SourceSeq, seq), ""
	})
}

func payloadBytes(items []upsertItem) int64 {
	var n int64
	for _, it := range items {
		n += int64(4*len(it.vec) + len(it.id) + len(it.partition))
	}
	return n
}

// importItems decodes streamed vectors of the job's slots.
func (s *Server) importItems(j *importJob, vs []client.Vector) ([]upsertItem, error) {
	items := make([]upsertItem, len(vs))
	for i, v := range vs {
		vec, err := client.DecodeB64(v.VectorB64, s.cfg.Dimension)
		if err != nil {
			return nil, fmt.Errorf("vector %q from the source: %w", v.ID, err)
		}
		slot := slots.Of(slots.KeyOf(v.ID, v.Partition))
		if !j.set.Has(slot) {
			return nil, fmt.Errorf("the source sent %q of slot %d, not in %s", v.ID, slot, j.status.Slots)
		}
		items[i] = upsertItem{id: v.ID, partition: v.Partition, vec: vec, slot: slot}
	}
	return items, nil
}

// importTail follows the source's WAL of the slots from the applied seq and applies
// each record once, in order: records at or below AppliedSeq are skipped, so a stream
// resumed after a restart of either side converges. Consecutive upserts are applied as
// one write; a heartbeat moves AppliedSeq to the stream's position once everything
// before it is applied.
func (s *Server) importTail(ctx context.Context, j *importJob, src *client.Client) error {
	// Persist first: the source holds its WAL from where this stream starts, and a
	// restart resumes from what is persisted.
	if err := s.saveImport(j, func(*client.ImportStatus) {}); err != nil {
		return err
	}
	s.slots.mu.Lock()
	from := j.status.AppliedSeq + 1
	s.slots.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	recs := make(chan client.SlotRecord, 4096)
	streamErr := make(chan error, 1)
	go func() {
		defer close(recs)
		streamErr <- src.SlotWAL(ctx, j.status.Slots, from, 0, func(r client.SlotRecord) error {
			select {
			case recs <- r:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	lastSave := time.Now()
	for r := range recs {
		batch := []client.SlotRecord{r}
	more:
		for len(batch) < 256 {
			select {
			case r, ok := <-recs:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		if err := s.applyTail(ctx, j, batch); err != nil {
			cancel()
			return err
		}
		if time.Since(lastSave) >= importSaveEvery {
			if err := s.saveImport(j, func(*client.ImportStatus) {}); err != nil {
				cancel()
				return err
			}
			lastSave = time.Now()
		}
	}
	err := <-streamErr
	if err == nil {
		err = errors.New("the source ended the WAL stream")
	}
	return err
}

// applyTail applies a run of WAL stream lines in order, merging consecutive upserts.
func (s *Server) applyTail(ctx context.Context, j *importJob, batch []client.SlotRecord) error {
	s.slots.mu.Lock()
	applied := j.status.AppliedSeq
	active := j.active()
	s.slots.mu.Unlock()
	if !active {
		return errImportStopped
	}
	var ups []upsertItem
	var upsSeq uint64
	var copied, bytes int64
	flush := func() error {
		if len(ups) == 0 {
			return nil
		}
		if _, _, err := s.store.Write(ctx, record{op: opUpsert, upserts: ups}); err != nil {
			return err
		}
		copied += int64(len(ups))
		bytes += payloadBytes(ups)
		applied, ups = upsSeq, nil
		return nil
	}
	var last uint64
	for _, r := range batch {
		last = max(last, r.Last)
		if r.Seq <= applied && (len(r.Upserts) > 0 || len(r.Deletes) > 0) {
			continue // applied before a restart or reconnect
		}
		switch {
		case len(r.Upserts) > 0:
			items, err := s.importItems(j, r.Upserts)
			if err != nil {
				return err
			}
			ups, upsSeq = append(ups, items...), r.Seq
			if len(ups) >= importBatch {
				if err := flush(); err != nil {
					return err
				}
			}
		case len(r.Deletes) > 0:
			if err := flush(); err != nil {
				return err
			}
			items := s.store.deleteItems(r.Deletes, r.DeletePartition)
			if _, _, err := s.store.Write(ctx, record{op: opDelete, partition: r.DeletePartition, deletes: items}); err != nil {
				return err
			}
			copied += int64(len(items))
			applied = r.Seq
		default: // a heartbeat: every write to the slots up to r.Seq was sent before it
			if err := flush(); err != nil {
				return err
			}
			applied = max(applied, r.Seq)
		}
	}
	if err := flush(); err != nil {
		return err
	}
	s.slots.mu.Lock()
	defer s.slots.mu.Unlock()
	j.status.AppliedSeq = max(j.status.AppliedSeq, applied)
	j.status.SourceSeq = max(j.status.SourceSeq, last, applied)
	j.status.Copied += copied
	j.status.Bytes += bytes
	j.status.Message = ""
	return nil
}
