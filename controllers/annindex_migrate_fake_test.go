/*
Copyright 2026 The annshard Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	shardclient "github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

// fakeWorld is the shards, routing table and routers an executor test drives: shard
// primaries that import, freeze and drop as contract B says, a table with a version for
// optimistic writes, routers that adopt epochs when told, and a clock. It checks the
// protocol's safety rules as they happen and lists every breach in violations.
type fakeWorld struct {
	mu         sync.Mutex
	now        time.Time
	table      slots.Table
	version    int
	shards     map[int32]*fakeShard
	routerAt   uint64 // the epoch every router reports
	autoRouter bool   // routers adopt every table at once
	events     []string
	violations []string
	// fail makes the next n calls of an operation fail ("StartImport", "writeTable", ...).
	fail map[string]int
	// writeLandsAnyway makes a failing table write land all the same (a lost answer).
	writeLandsAnyway bool
	// stallApply keeps imports from applying past the source's freeze (a slow destination).
	stallApply bool
	// slowApply makes the next n status polls of a frozen source's import report the
	// freeze not applied yet (a destination a few records behind).
	slowApply int
	// importFails makes the next n imports report Failed on their first status.
	importFails int
	calls       map[string]int
	// replicaLag is each shard's read replicas' replication lag, as the load collector
	// reports it.
	replicaLag map[int32]uint64
}

type fakeShard struct {
	w      *fakeWorld
	k      int32
	owned  slots.Set
	frozen slots.Set
	epoch  uint64
	// seq is the source's newest log sequence number; every test pass writes a few.
	seq     uint64
	imports map[string]*fakeImport
	dropped slots.Set
	// frozenSeq is seq when the current freeze began.
	frozenSeq uint64
	// down makes every call fail as if the pod were gone.
	down bool
}

type fakeImport struct {
	req       shardclient.ImportRequest
	phase     string
	applied   uint64
	copied    int64
	polls     int
	failFirst bool
	finished  uint64
}

func newFakeWorld(t slots.Table) *fakeWorld {
	w := &fakeWorld{now: time.Date(2026, 11, 27, 20, 0, 0, 0, time.UTC), table: t, version: 1,
		shards: map[int32]*fakeShard{}, fail: map[string]int{}, calls: map[string]int{}, autoRouter: true, routerAt: t.Epoch,
		replicaLag: map[int32]uint64{}}
	for k := range int32(slots.MaxShards) {
		own := t.SlotsOf(int(k))
		if own.Len() == 0 && int(k) >= t.Shards {
			continue
		}
		w.shards[k] = &fakeShard{w: w, k: k, owned: own, epoch: t.Epoch, seq: 100, imports: map[string]*fakeImport{}}
	}
	return w
}

// addShard starts an empty shard k (a new StatefulSet).
func (w *fakeWorld) addShard(k int32) {
	w.shards[k] = &fakeShard{w: w, k: k, epoch: w.table.Epoch, seq: 100, imports: map[string]*fakeImport{}}
}

var errInjected = errors.New("injected failure")

// injected says whether op fails now; the lock is held.
func (w *fakeWorld) injected(op string) bool {
	w.calls[op]++
	if w.fail[op] > 0 {
		w.fail[op]--
		return true
	}
	return false
}

func (w *fakeWorld) violate(format string, args ...any) {
	w.violations = append(w.violations, fmt.Sprintf(format, args...))
}

// writeLoad advances every source's log, as writes to other slots do.
func (w *fakeWorld) writeLoad(n uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.shards {
		s.seq += n
	}
}

func (w *fakeWorld) env() *migrationEnv {
	return &migrationEnv{
		now: func() time.Time {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.now
		},
		sleep: func(_ context.Context, d time.Duration) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.now = w.now.Add(d)
			return nil
		},
		shard: func(_ context.Context, k int32) (shardPrimary, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			s := w.shards[k]
			if s == nil || s.down {
				return nil, fmt.Errorf("shard %d: %w", k, errPrimaryNotReady)
			}
			return s, nil
		},
		readTable: func(context.Context) (slots.Table, string, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.injected("readTable") {
				return slots.Table{}, "", errInjected
			}
			return w.table, strconv.Itoa(w.version), nil
		},
		writeTable: func(_ context.Context, t slots.Table, version string) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			if version != strconv.Itoa(w.version) {
				return errTableConflict
			}
			fail := w.injected("writeTable")
			if fail && !w.writeLandsAnyway {
				return errInjected
			}
			w.checkTableWrite(t)
			w.table = t
			w.version++
			for _, s := range w.shards {
				s.epoch = max(s.epoch, t.Epoch)
				// A source adopting a table that takes slots away stops owning them.
				s.owned = s.owned.Minus(s.owned.Minus(t.SlotsOf(int(s.k))))
			}
			if w.autoRouter {
				w.routerAt = t.Epoch
			}
			if fail {
				return errInjected
			}
			return nil
		},
		routersAt: func(_ context.Context, e uint64) (bool, []string, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.injected("routersAt") {
				return false, nil, errInjected
			}
			if w.routerAt >= e {
				return true, nil, nil
			}
			return false, []string{fmt.Sprintf("router r-0: routes by epoch %d, not yet %d", w.routerAt, e)}, nil
		},
		vectors: func(int32) int64 { return 4096 },
		replicaLag: func(k int32) uint64 {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.replicaLag[k]
		},
		event: func(warning bool, reason, msg string) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.events = append(w.events, reason+": "+msg)
		},
	}
}

// checkTableWrite enforces the handoff rule on a table that moves slots: they were frozen
// on the source and the destination applied the source's log up to the freeze.
func (w *fakeWorld) checkTableWrite(next slots.Table) {
	if next.Epoch <= w.table.Epoch {
		w.violate("table written at epoch %d over epoch %d", next.Epoch, w.table.Epoch)
	}
	for slot := range slots.Count {
		from, to := w.table.Owners[slot], next.Owners[slot]
		if from == to {
			continue
		}
		src, dst := w.shards[from], w.shards[to]
		if src == nil || dst == nil {
			w.violate("slot %d moved between unknown shards %d -> %d", slot, from, to)
			return
		}
		if !src.frozen.Has(slot) {
			w.violate("slot %d handed from %d to %d without a freeze", slot, from, to)
			return
		}
		caught := false
		for _, im := range dst.imports {
			if set := mustSet(im.req.Slots); set.Has(slot) && im.phase == shardclient.ImportCatchingUp && im.applied >= src.seqAtFreeze() {
				caught = true
			}
		}
		if !caught {
			w.violate("slot %d handed to %d before it applied the source's last write", slot, to)
			return
		}
	}
}

// seqAtFreeze is the source's sequence number when its slots were frozen: after it, the
// frozen slots took no write.
func (s *fakeShard) seqAtFreeze() uint64 { return s.frozenSeq }

func (s *fakeShard) BaseURL() string { return fmt.Sprintf("http://shard-%d:8080", s.k) }

func (s *fakeShard) call(op string) error {
	if s.w.injected(op) {
		return errInjected
	}
	return nil
}

func (s *fakeShard) state() *shardclient.SlotsState {
	return &shardclient.SlotsState{Owned: s.owned.String(), Frozen: s.frozen.String(), Epoch: s.epoch, Seq: s.seq}
}

func (s *fakeShard) Slots(context.Context) (*shardclient.SlotsState, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if err := s.call("Slots"); err != nil {
		return nil, err
	}
	return s.state(), nil
}

func (s *fakeShard) FreezeSlots(_ context.Context, req *shardclient.SlotsRequest) (*shardclient.SlotsState, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if err := s.call("FreezeSlots"); err != nil {
		return nil, err
	}
	set := mustSet(req.Slots)
	if req.Epoch != s.w.table.Epoch {
		s.w.violate("shard %d frozen at epoch %d while the table is at %d", s.k, req.Epoch, s.w.table.Epoch)
	}
	if s.frozen.Len() == 0 {
		s.frozenSeq = s.seq
	}
	s.frozen = s.frozen.Union(set)
	return s.state(), nil
}

func (s *fakeShard) UnfreezeSlots(_ context.Context, req *shardclient.SlotsRequest) (*shardclient.SlotsState, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if err := s.call("UnfreezeSlots"); err != nil {
		return nil, err
	}
	set := mustSet(req.Slots)
	for _, slot := range set.Slots() {
		if s.w.table.Owners[slot] != s.k && s.frozen.Has(slot) {
			s.w.violate("shard %d unfroze slot %d after the table gave it away", s.k, slot)
			return nil, &shardclient.APIError{Code: shardclient.CodeConflict, Message: "epoch moved"}
		}
	}
	s.frozen = s.frozen.Minus(set)
	return s.state(), nil
}

func (s *fakeShard) DropSlots(_ context.Context, req *shardclient.SlotsRequest) (*shardclient.SlotsState, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if err := s.call("DropSlots"); err != nil {
		return nil, err
	}
	set := mustSet(req.Slots)
	for _, slot := range set.Slots() {
		if int(s.w.table.Owners[slot]) == int(s.k) {
			s.w.violate("shard %d dropped slot %d, which the table still gives it", s.k, slot)
			return nil, errInjected
		}
	}
	if s.w.routerAt < req.Epoch {
		s.w.violate("shard %d dropped slots before every router routes by epoch %d", s.k, req.Epoch)
	}
	st := s.state()
	st.Dropped = set.Len()
	s.owned, s.frozen = s.owned.Minus(set), s.frozen.Minus(set)
	s.dropped = s.dropped.Union(set)
	return st, nil
}

func notFound() error {
	return &shardclient.APIError{Code: shardclient.CodeNotFound, Message: "no such import", HTTPStatus: http.StatusNotFound}
}

func (s *fakeShard) StartImport(_ context.Context, req *shardclient.ImportRequest) (*shardclient.ImportStatus, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if err := s.call("StartImport"); err != nil {
		return nil, err
	}
	im := s.imports[req.ID]
	if im == nil {
		im = &fakeImport{req: *req, phase: shardclient.ImportCopying}
		if s.w.importFails > 0 {
			s.w.importFails--
			im.failFirst = true
		}
		s.imports[req.ID] = im
	}
	return s.status(im), nil
}

func (s *fakeShard) status(im *fakeImport) *shardclient.ImportStatus {
	src := s.sourceOf(im)
	return &shardclient.ImportStatus{ID: im.req.ID, Slots: im.req.Slots, Source: im.req.Source, Phase: im.phase, Copied: im.copied,
		Bytes: im.copied * 100, AppliedSeq: im.applied, SourceSeq: src.seq}
}

func (s *fakeShard) ImportStatus(_ context.Context, id string) (*shardclient.ImportStatus, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if err := s.call("ImportStatus"); err != nil {
		return nil, err
	}
	im := s.imports[id]
	if im == nil {
		return nil, notFound()
	}
	im.polls++
	set := mustSet(im.req.Slots)
	src := s.sourceOf(im)
	switch {
	case im.phase != shardclient.ImportCopying && im.phase != shardclient.ImportCatchingUp:
	case im.failFirst:
		im.phase = shardclient.ImportFailed
	case im.polls >= 2:
		im.phase = shardclient.ImportCatchingUp
		im.copied = int64(set.Len()) * 10
		im.applied = src.seq
		if s.w.slowApply > 0 && src.frozen.Len() > 0 {
			s.w.slowApply--
			im.applied = src.seq - 1
		}
		if s.w.stallApply {
			im.applied = src.seq - min(src.seq, 5) // close, but never at the freeze
		}
	default:
		im.copied = int64(set.Len()) * 5
	}
	return s.status(im), nil
}

func (s *fakeShard) CancelImport(_ context.Context, id string) (*shardclient.ImportStatus, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if err := s.call("CancelImport"); err != nil {
		return nil, err
	}
	im := s.imports[id]
	if im == nil {
		return nil, notFound()
	}
	if im.finished != 0 {
		s.w.violate("import %s cancelled after it finished", id)
	}
	im.phase = shardclient.ImportCancelled
	return s.status(im), nil
}

func (s *fakeShard) FinishImport(_ context.Context, id string, epoch uint64) (*shardclient.ImportStatus, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if err := s.call("FinishImport"); err != nil {
		return nil, err
	}
	im := s.imports[id]
	if im == nil {
		return nil, notFound()
	}
	set := mustSet(im.req.Slots)
	if slotOwner(&s.w.table, set, -1, s.k) != s.k || s.w.table.Epoch < epoch {
		s.w.violate("import %s finished at epoch %d before the table gives shard %d its slots", id, epoch, s.k)
	}
	im.phase, im.finished = shardclient.ImportDone, epoch
	s.owned = s.owned.Union(set)
	return s.status(im), nil
}

// sourceOf is the shard an import pulls from: the one its source URL names.
func (s *fakeShard) sourceOf(im *fakeImport) *fakeShard {
	for _, o := range s.w.shards {
		if o.BaseURL() == im.req.Source {
			return o
		}
	}
	panic("import from an unknown source " + im.req.Source)
}
