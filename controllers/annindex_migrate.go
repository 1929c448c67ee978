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
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	shardclient "github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

// The migration executor's safety rules and pacing.
const (
	// HandoffPauseLimit bounds the write pause of one handoff: from the freeze of the
	// slots on the source to the routing table that gives them to the destination. Past
	// it the slots are unfrozen and the move goes back to catching up. Writes to frozen
	// slots wait in the routers meanwhile, within the router's request deadline (its
	// --timeout, 5 s by default), which must also cover the routers learning the new
	// table and the retry: so the pause is bounded well below it.
	HandoffPauseLimit = 2 * time.Second
	// HandoffMaxLag is how far (in source log sequence numbers) the destination may trail
	// the source when a handoff starts; more would make the pause long.
	HandoffMaxLag = 512
	// MaxHandoffAttempts is how many handoffs may run out of time before the move fails.
	MaxHandoffAttempts = 3
	// MaxImportAttempts is how many copies the destination may start for one move before
	// it fails.
	MaxImportAttempts = 3

	// copyPoll is how often a copying move is looked at; handoffPoll how often the
	// destination is asked during a freeze; cleanupPoll how often the routers are asked
	// for the new epoch.
	copyPoll    = 2 * time.Second
	handoffPoll = 20 * time.Millisecond
	cleanupPoll = time.Second
	// keepFinishedMigrations is how many Done or Failed moves status keeps.
	keepFinishedMigrations = 8
)

// Event reasons of the executor.
const (
	eventMigrationStarted = "MigrationStarted"
	eventSlotsHandedOff   = "SlotsHandedOff"
	eventHandoffTimedOut  = "HandoffTimedOut"
	eventMigrationDone    = "MigrationDone"
	eventMigrationFailed  = "MigrationFailed"
)

// errTableConflict is what a routing table write returns when the ConfigMap changed
// since it was read (optimistic concurrency).
var errTableConflict = errors.New("routing table changed since it was read")

// migrationEnv is everything one executor pass sees of the world and may do to it.
// The executor keeps no state of its own: each step re-derives where a move is from its
// status row, the routing table and what the shards answer, so an operator killed at any
// point resumes where it stopped.
type migrationEnv struct {
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	// shard reaches the primary of shard k.
	shard func(ctx context.Context, k int32) (shardPrimary, error)
	// readTable reads the routing table from the API server with its resourceVersion.
	readTable func(ctx context.Context) (slots.Table, string, error)
	// writeTable replaces the table if it is still at version, else errTableConflict.
	writeTable func(ctx context.Context, t slots.Table, version string) error
	// routersAt says whether every ready router routes by epoch e or later; if not, which
	// did not and why.
	routersAt func(ctx context.Context, e uint64) (bool, []string, error)
	// vectors is the source's vector count from the load collector, 0 if unknown.
	vectors func(k int32) int64
	// replicaLag is the largest replication lag (records) among shard k's reporting
	// read replicas; 0 with none.
	replicaLag func(k int32) uint64
	// event records an event on the index.
	event func(warning bool, reason, msg string)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// migrationActive says whether a move still needs the executor: not Done, and not a
// Failed move whose rollback finished.
func migrationActive(m *annv1alpha1.MigrationStatus) bool {
	switch m.Phase {
	case annv1alpha1.MigrationDone:
		return false
	case annv1alpha1.MigrationFailed:
		return m.FinishedAt == nil
	}
	return true
}

// runMigrations advances every active move by one step. Moves in Handoff go first and
// only one handoff runs per pass: handoffs are serial, so the epoch a source was frozen
// at is the epoch the table is written from. A Pending move starts only while nothing is
// blocked, fewer than limit moves have started, and neither of its shards is in another
// started move (one move out of and one into a shard at a time). A step's trouble with a
// shard is recorded in the move's message and retried; the returned wait is the
// shortest any move asked for.
func (e *migrationEnv) runMigrations(ctx context.Context, ms []annv1alpha1.MigrationStatus, blocked string, limit int) (time.Duration, error) {
	order := make([]int, 0, len(ms))
	started := 0
	busyOut, busyIn := map[int32]bool{}, map[int32]bool{}
	for i := range ms {
		m := &ms[i]
		if !migrationActive(m) {
			continue
		}
		order = append(order, i)
		if m.Phase != annv1alpha1.MigrationPending {
			started++
			busyOut[m.FromShard], busyIn[m.ToShard] = true, true
		}
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return boolRank(ms[a].Phase != annv1alpha1.MigrationHandoff) - boolRank(ms[b].Phase != annv1alpha1.MigrationHandoff)
	})
	var wait time.Duration
	handoffFree := true
	for _, i := range order {
		m := &ms[i]
		if m.Phase == annv1alpha1.MigrationPending {
			switch {
			case blocked != "":
				m.Message = "queued: " + blocked
				wait = lowestWait(wait, copyPoll)
				continue
			case started >= limit || busyOut[m.FromShard] || busyIn[m.ToShard]:
				m.Message = "queued behind the moves in flight"
				continue
			}
			started++
			busyOut[m.FromShard], busyIn[m.ToShard] = true, true
		}
		w, err := e.step(ctx, m, handoffFree)
		if err != nil {
			return wait, err
		}
		if m.Phase == annv1alpha1.MigrationHandoff || m.FrozenAt != nil {
			handoffFree = false
		}
		wait = lowestWait(wait, w)
	}
	return wait, nil
}

func lowestWait(a, b time.Duration) time.Duration {
	if a == 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// slotOwner says which of from and to the table gives every slot of set to: from, to,
// or -1 when neither owns them all.
func slotOwner(t *slots.Table, set slots.Set, from, to int32) int32 {
	owner := int32(-2)
	for _, slot := range set.Slots() {
		o := t.Owners[slot]
		if o != from && o != to {
			return -1
		}
		if owner == -2 {
			owner = o
		} else if owner != o {
			return -1
		}
	}
	if owner == -2 {
		return -1
	}
	return owner
}

// importID names the destination's import job of a move's current attempt: a failed or
// cancelled job is never restarted under its own ID.
func importID(m *annv1alpha1.MigrationStatus) string {
	return fmt.Sprintf("%s.%d", m.ID, max(m.ImportAttempts, 1))
}

// step advances one move. The table decides what may happen: once it gives the slots
// to the destination the move only goes forward (finish, wait for routers, drop on the
// source); before that, any failure rolls back and the table never changed.
func (e *migrationEnv) step(ctx context.Context, m *annv1alpha1.MigrationStatus, handoffFree bool) (time.Duration, error) {
	set, err := slots.ParseSet(m.Slots)
	if err != nil || set.Len() == 0 {
		m.Phase, m.Message = annv1alpha1.MigrationFailed, fmt.Sprintf("slot set %q is not valid", m.Slots)
		m.FinishedAt = ptrTime(e.now())
		return 0, nil
	}
	tab, version, err := e.readTable(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading the routing table for migration %s: %w", m.ID, err)
	}
	switch slotOwner(&tab, set, m.FromShard, m.ToShard) {
	case m.ToShard:
		if m.Phase == annv1alpha1.MigrationFailed {
			// A move is failed only before the handoff; a table that gives its slots to
			// the destination now was changed by someone else. Leave it.
			m.FinishedAt = ptrTime(e.now())
			return 0, nil
		}
		return e.afterHandoff(ctx, m, set, tab)
	case m.FromShard:
	default:
		return e.rollback(ctx, m, tab, fmt.Sprintf("the routing table at epoch %d gives slots %s to neither shard %d nor %d", tab.Epoch, m.Slots, m.FromShard, m.ToShard))
	}
	switch m.Phase {
	case annv1alpha1.MigrationFailed:
		return e.rollback(ctx, m, tab, m.Message)
	case annv1alpha1.MigrationCleanup:
		// The table gives the slots back to the source after they were handed over: a
		// table restored by hand. Dropping now would lose the data; stop and say so.
		m.Phase = annv1alpha1.MigrationFailed
		m.FinishedAt = ptrTime(e.now())
		m.Message = fmt.Sprintf("the routing table at epoch %d gives slots back to shard %d after the handoff at epoch %d; nothing dropped", tab.Epoch, m.FromShard, m.Epoch)
		e.event(true, eventMigrationFailed, m.ID+": "+m.Message)
		return 0, nil
	case annv1alpha1.MigrationPending:
		return e.start(ctx, m, tab)
	}
	return e.copyOrHandoff(ctx, m, set, tab, version, handoffFree)
}

// ends reaches both primaries of a move; if one cannot be reached, the move's message
// says which and ok is false.
func (e *migrationEnv) ends(ctx context.Context, m *annv1alpha1.MigrationStatus) (src, dst shardPrimary, ok bool) {
	src, err := e.shard(ctx, m.FromShard)
	if err != nil {
		m.Message = "waiting for the source: " + err.Error()
		return nil, nil, false
	}
	dst, err = e.shard(ctx, m.ToShard)
	if err != nil {
		m.Message = "waiting for the destination: " + err.Error()
		return nil, nil, false
	}
	return src, dst, true
}

// start asks the destination to pull the slots from the source.
func (e *migrationEnv) start(ctx context.Context, m *annv1alpha1.MigrationStatus, tab slots.Table) (time.Duration, error) {
	src, dst, ok := e.ends(ctx, m)
	if !ok {
		return copyPoll, nil
	}
	m.ImportAttempts = max(m.ImportAttempts, 1)
	if m.Total == 0 {
		if n := e.vectors(m.FromShard); n > 0 {
			set, _ := slots.ParseSet(m.Slots)
			owned := tab.SlotsOf(int(m.FromShard))
			if o := owned.Len(); o > 0 {
				m.Total = n * int64(set.Len()) / int64(o)
			}
		}
	}
	st, err := dst.StartImport(ctx, &shardclient.ImportRequest{ID: importID(m), Slots: m.Slots, Source: src.BaseURL(), Epoch: tab.Epoch})
	if err != nil {
		m.Message = "starting the copy: " + err.Error()
		return copyPoll, nil
	}
	if m.StartedAt == nil {
		m.StartedAt = ptrTime(e.now())
	}
	m.Phase, m.Message = annv1alpha1.MigrationCopying, "copying"
	e.record(m, st)
	if m.ImportAttempts == 1 {
		e.event(false, eventMigrationStarted, fmt.Sprintf("%s: moving slots %s from shard %d to shard %d (%s)", m.ID, m.Slots, m.FromShard, m.ToShard, m.Reason))
	}
	return copyPoll, nil
}

// record copies an import job's progress into the move's row.
func (e *migrationEnv) record(m *annv1alpha1.MigrationStatus, st *shardclient.ImportStatus) {
	m.Copied, m.Bytes = st.Copied, st.Bytes
	m.Lag = 0
	if st.SourceSeq > st.AppliedSeq {
		m.Lag = int64(st.SourceSeq - st.AppliedSeq)
	}
	if m.StartedAt != nil {
		if secs := e.now().Sub(m.StartedAt.Time).Seconds(); secs >= 1 {
			m.BytesPerSecond = int64(float64(st.Bytes) / secs)
		}
	}
}

// copyOrHandoff follows the destination's copy and starts the handoff once it has
// caught up. A freeze found on the source without a record of it (the operator died
// after freezing) is taken up as the handoff it was.
func (e *migrationEnv) copyOrHandoff(ctx context.Context, m *annv1alpha1.MigrationStatus, set slots.Set, tab slots.Table, version string, handoffFree bool) (time.Duration, error) {
	src, dst, ok := e.ends(ctx, m)
	if !ok {
		return copyPoll, nil
	}
	if m.Phase != annv1alpha1.MigrationHandoff {
		state, err := src.Slots(ctx)
		if err != nil {
			m.Message = "reading the source's slots: " + err.Error()
			return copyPoll, nil
		}
		frozen, err := slots.ParseSet(state.Frozen)
		if err != nil {
			// Not knowing whether the source froze these slots, the move cannot tell a
			// copy from a handoff to finish: it waits for a state it can read.
			m.Message = "reading the source's frozen slots: " + err.Error()
			return copyPoll, nil
		}
		if both := frozen.Intersect(set); !both.IsEmpty() {
			m.Phase = annv1alpha1.MigrationHandoff
			if m.FrozenAt == nil {
				m.FrozenAt = ptrTime(e.now())
			}
		}
	}
	if m.Phase == annv1alpha1.MigrationHandoff && m.FrozenAt != nil && e.now().Sub(m.FrozenAt.Time) > HandoffPauseLimit {
		return e.handoffTimedOut(ctx, m, src, tab)
	}
	st, err := dst.ImportStatus(ctx, importID(m))
	switch {
	case shardclient.IsCode(err, shardclient.CodeNotFound):
		// The destination lost the job: copy again from the start.
		return e.importLost(ctx, m, src, tab, "the destination has no import "+importID(m))
	case err != nil:
		m.Message = "reading the copy's progress: " + err.Error()
		if m.Phase == annv1alpha1.MigrationHandoff {
			return handoffPoll, nil
		}
		return copyPoll, nil
	}
	e.record(m, st)
	switch st.Phase {
	case shardclient.ImportFailed, shardclient.ImportCancelled:
		return e.importLost(ctx, m, src, tab, fmt.Sprintf("import %s %s: %s", st.ID, strings.ToLower(st.Phase), st.Message))
	case shardclient.ImportCopying:
		if m.Phase != annv1alpha1.MigrationHandoff {
			m.Phase, m.Message = annv1alpha1.MigrationCopying, "copying"
		}
		return copyPoll, nil
	}
	if m.Phase != annv1alpha1.MigrationHandoff {
		m.Phase = annv1alpha1.MigrationCatchingUp
		switch {
		case m.Lag > HandoffMaxLag:
			m.Message = fmt.Sprintf("catching up: %d behind the source", m.Lag)
			return copyPoll, nil
		case !handoffFree:
			m.Message = "caught up; waiting for another move's handoff"
			return copyPoll, nil
		}
		// The routers read from the destination's replicas at the new epoch: they
		// must hold what its primary imported first.
		if lag := e.replicaLag(m.ToShard); lag > HandoffMaxLag {
			m.Message = fmt.Sprintf("caught up; waiting for shard %d's replicas (%d records behind)", m.ToShard, lag)
			return copyPoll, nil
		}
	}
	return e.handoff(ctx, m, set, tab, version, src, dst)
}

// handoff freezes the slots on the source, waits (at most HandoffPauseLimit since the
// freeze) until the destination applied the source's last write to them, writes the
// table that gives them to the destination, and has the destination take them.
func (e *migrationEnv) handoff(ctx context.Context, m *annv1alpha1.MigrationStatus, set slots.Set, tab slots.Table, version string, src, dst shardPrimary) (time.Duration, error) {
	if m.FrozenAt == nil {
		m.FrozenAt = ptrTime(e.now())
	}
	m.Phase = annv1alpha1.MigrationHandoff
	state, err := src.FreezeSlots(ctx, &shardclient.SlotsRequest{Slots: m.Slots, Epoch: tab.Epoch})
	if err != nil {
		m.Message = "freezing the slots: " + err.Error()
		return handoffPoll, nil
	}
	m.FreezeSeq, m.Epoch = int64(state.Seq), int64(tab.Epoch+1)
	deadline := m.FrozenAt.Add(HandoffPauseLimit)
	for {
		st, err := dst.ImportStatus(ctx, importID(m))
		if err == nil {
			e.record(m, st)
			if st.Phase == shardclient.ImportFailed || st.Phase == shardclient.ImportCancelled {
				return e.importLost(ctx, m, src, tab, fmt.Sprintf("import %s %s during the handoff: %s", st.ID, strings.ToLower(st.Phase), st.Message))
			}
			if st.AppliedSeq >= state.Seq && st.Phase != shardclient.ImportCopying {
				break
			}
		}
		if !e.now().Before(deadline) {
			return e.handoffTimedOut(ctx, m, src, tab)
		}
		if err := e.sleep(ctx, handoffPoll); err != nil {
			return 0, err
		}
	}
	next := tab
	next.Move(set, int(m.ToShard))
	for {
		err := e.writeTable(ctx, next, version)
		if err == nil {
			break
		}
		// Whether it failed or only its answer did, the table says what happened.
		now, v, rerr := e.readTable(ctx)
		switch {
		case rerr != nil:
			m.Message = "writing the routing table: " + err.Error()
			return handoffPoll, nil
		case slotOwner(&now, set, m.FromShard, m.ToShard) == m.ToShard:
			next = now
		case errors.Is(err, errTableConflict) && slotOwner(&now, set, m.FromShard, m.ToShard) == m.FromShard && e.now().Before(deadline):
			next, version = now, v
			next.Move(set, int(m.ToShard))
			continue
		case e.now().Before(deadline):
			m.Message = "writing the routing table: " + err.Error()
			return handoffPoll, nil
		default:
			return e.handoffTimedOut(ctx, m, src, now)
		}
		break
	}
	pause := e.now().Sub(m.FrozenAt.Time).Round(time.Millisecond)
	m.Epoch, m.WritePauseMillis = int64(next.Epoch), pause.Milliseconds()
	m.Message = fmt.Sprintf("handed off at epoch %d after a %s write pause", next.Epoch, pause)
	e.event(false, eventSlotsHandedOff, fmt.Sprintf("%s: slots %s now belong to shard %d at epoch %d; writes paused %s", m.ID, m.Slots, m.ToShard, next.Epoch, pause))
	return e.afterHandoff(ctx, m, set, next)
}

// handoffTimedOut undoes a freeze that lasted too long (the table still gives the slots
// to the source) and sends the move back to catching up, or fails it after
// MaxHandoffAttempts.
func (e *migrationEnv) handoffTimedOut(ctx context.Context, m *annv1alpha1.MigrationStatus, src shardPrimary, tab slots.Table) (time.Duration, error) {
	if _, err := src.UnfreezeSlots(ctx, &shardclient.SlotsRequest{Slots: m.Slots, Epoch: tab.Epoch}); err != nil {
		m.Message = "unfreezing after a handoff past its pause limit: " + err.Error()
		return handoffPoll, nil
	}
	m.HandoffAttempts++
	m.FrozenAt, m.FreezeSeq, m.Epoch = nil, 0, 0
	why := fmt.Sprintf("the destination did not apply the source's last write within %s (attempt %d of %d)", HandoffPauseLimit, m.HandoffAttempts, MaxHandoffAttempts)
	if m.HandoffAttempts >= MaxHandoffAttempts {
		return e.rollback(ctx, m, tab, "handoff failed: "+why)
	}
	m.Phase, m.Message = annv1alpha1.MigrationCatchingUp, "unfrozen: "+why
	e.event(true, eventHandoffTimedOut, m.ID+": "+m.Message)
	return copyPoll, nil
}

// importLost handles a copy the destination failed, cancelled or forgot: undo any
// freeze, drop the partial copy and start another attempt, or fail the move after
// MaxImportAttempts.
func (e *migrationEnv) importLost(ctx context.Context, m *annv1alpha1.MigrationStatus, src shardPrimary, tab slots.Table, why string) (time.Duration, error) {
	if m.Phase == annv1alpha1.MigrationHandoff {
		if _, err := src.UnfreezeSlots(ctx, &shardclient.SlotsRequest{Slots: m.Slots, Epoch: tab.Epoch}); err != nil {
			m.Message = why + "; unfreezing: " + err.Error()
			return handoffPoll, nil
		}
		m.FrozenAt, m.FreezeSeq, m.Epoch = nil, 0, 0
	}
	if m.ImportAttempts >= MaxImportAttempts {
		return e.rollback(ctx, m, tab, fmt.Sprintf("copy failed %d times: %s", m.ImportAttempts, why))
	}
	dst, err := e.shard(ctx, m.ToShard)
	if err != nil {
		m.Message = why + "; waiting for the destination: " + err.Error()
		return copyPoll, nil
	}
	if _, err := dst.CancelImport(ctx, importID(m)); err != nil && !shardclient.IsCode(err, shardclient.CodeNotFound) {
		m.Message = why + "; cancelling it: " + err.Error()
		return copyPoll, nil
	}
	m.ImportAttempts++
	m.Phase, m.Message = annv1alpha1.MigrationPending, why+"; copying again"
	m.Copied, m.Bytes, m.Lag = 0, 0, 0
	return e.start(ctx, m, tab)
}

// rollback undoes a move whose slots the table still gives to the source: the
// destination drops its partial copy, the source takes writes again. The move is
// Failed at once; FinishedAt is set once both are done (retried until then).
func (e *migrationEnv) rollback(ctx context.Context, m *annv1alpha1.MigrationStatus, tab slots.Table, why string) (time.Duration, error) {
	if m.Phase != annv1alpha1.MigrationFailed {
		m.Phase, m.Message = annv1alpha1.MigrationFailed, why
		e.event(true, eventMigrationFailed, m.ID+": "+why)
	}
	var undone []string
	if dst, err := e.shard(ctx, m.ToShard); err != nil {
		undone = append(undone, "destination: "+err.Error())
	} else if _, err := dst.CancelImport(ctx, importID(m)); err != nil && !shardclient.IsCode(err, shardclient.CodeNotFound) {
		undone = append(undone, "cancelling the copy: "+err.Error())
	}
	if slotOwner(&tab, mustSet(m.Slots), m.FromShard, m.ToShard) == m.FromShard {
		if src, err := e.shard(ctx, m.FromShard); err != nil {
			undone = append(undone, "source: "+err.Error())
		} else if _, err := src.UnfreezeSlots(ctx, &shardclient.SlotsRequest{Slots: m.Slots, Epoch: tab.Epoch}); err != nil {
			undone = append(undone, "unfreezing: "+err.Error())
		}
	}
	m.FrozenAt, m.FreezeSeq = nil, 0
	if len(undone) > 0 {
		m.Message = why + "; rolling back: " + strings.Join(undone, "; ")
		return copyPoll, nil
	}
	m.Message = why + "; rolled back, routing unchanged"
	m.Epoch = 0
	m.FinishedAt = ptrTime(e.now())
	return 0, nil
}

// afterHandoff is every step once the table gives the slots to the destination: the
// destination takes them (idempotent), then, once every router routes by the new epoch,
// the source drops them. Nothing here unfreezes or gives the slots back.
func (e *migrationEnv) afterHandoff(ctx context.Context, m *annv1alpha1.MigrationStatus, set slots.Set, tab slots.Table) (time.Duration, error) {
	if m.Epoch == 0 {
		// Handed off, but the epoch was not recorded (the operator died in between):
		// the current one is at least it, which finishing and the router check accept.
		m.Epoch = int64(tab.Epoch)
	}
	m.FrozenAt, m.FreezeSeq = nil, 0
	if m.Phase != annv1alpha1.MigrationCleanup {
		m.Phase = annv1alpha1.MigrationHandoff
		dst, err := e.shard(ctx, m.ToShard)
		if err != nil {
			m.Message = "handed off; waiting for the destination to take the slots: " + err.Error()
			return handoffPoll, nil
		}
		// An unknown job is fine: a destination that adopts a table giving it the slots
		// takes them on its own.
		if _, err := dst.FinishImport(ctx, importID(m), uint64(m.Epoch)); err != nil && !shardclient.IsCode(err, shardclient.CodeNotFound) {
			m.Message = "handed off; the destination taking the slots: " + err.Error()
			return handoffPoll, nil
		}
		m.Phase, m.Lag = annv1alpha1.MigrationCleanup, 0
	}
	ok, not, err := e.routersAt(ctx, uint64(m.Epoch))
	if err != nil {
		m.Message = "asking the routers for their epoch: " + err.Error()
		return cleanupPoll, nil
	}
	if !ok {
		m.Message = fmt.Sprintf("waiting for every router to route by epoch %d: %s", m.Epoch, culprits(not))
		return cleanupPoll, nil
	}
	src, err := e.shard(ctx, m.FromShard)
	if err != nil {
		m.Message = "waiting for the source to drop the slots: " + err.Error()
		return cleanupPoll, nil
	}
	dropped, err := src.DropSlots(ctx, &shardclient.SlotsRequest{Slots: set.String(), Epoch: uint64(m.Epoch)})
	if err != nil {
		m.Message = "dropping the slots on the source: " + err.Error()
		return cleanupPoll, nil
	}
	m.Phase = annv1alpha1.MigrationDone
	m.FinishedAt = ptrTime(e.now())
	took := ""
	if m.StartedAt != nil {
		took = " in " + m.FinishedAt.Sub(m.StartedAt.Time).Round(time.Second).String()
	}
	m.Message = fmt.Sprintf("moved %d records%s; the source dropped %d", m.Copied, took, dropped.Dropped)
	e.event(false, eventMigrationDone, fmt.Sprintf("%s: slots %s moved from shard %d to shard %d%s", m.ID, m.Slots, m.FromShard, m.ToShard, took))
	return 0, nil
}

func mustSet(text string) slots.Set {
	s, _ := slots.ParseSet(text)
	return s
}

func ptrTime(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t)
	return &mt
}

// pruneMigrations keeps every active move and the newest keepFinishedMigrations
// finished ones, oldest first as they were.
func pruneMigrations(ms []annv1alpha1.MigrationStatus) []annv1alpha1.MigrationStatus {
	finished := 0
	for i := range ms {
		if !migrationActive(&ms[i]) {
			finished++
		}
	}
	drop := finished - keepFinishedMigrations
	if drop <= 0 {
		return ms
	}
	out := ms[:0:0]
	for i := range ms {
		if drop > 0 && !migrationActive(&ms[i]) {
			drop--
			continue
		}
		out = append(out, ms[i])
	}
	return out
}

// migrationSummary is status.migration: the first active move in a few words, and how
// many more there are.
func migrationSummary(ms []annv1alpha1.MigrationStatus) (int32, string) {
	var active []*annv1alpha1.MigrationStatus
	for i := range ms {
		if migrationActive(&ms[i]) && ms[i].Phase != annv1alpha1.MigrationFailed {
			active = append(active, &ms[i])
		}
	}
	if len(active) == 0 {
		return 0, ""
	}
	m := active[0]
	out := fmt.Sprintf("%s %d->%d", m.Phase, m.FromShard, m.ToShard)
	if m.Total > 0 {
		out += fmt.Sprintf(" %d%%", min(100, m.Copied*100/m.Total))
	} else if m.Copied > 0 {
		out += fmt.Sprintf(" %d copied", m.Copied)
	}
	if m.Lag > 0 {
		out += fmt.Sprintf(" lag %d", m.Lag)
	}
	if m.BytesPerSecond > 0 {
		out += fmt.Sprintf(" %.1f MB/s", float64(m.BytesPerSecond)/1e6)
	}
	if len(active) > 1 {
		out += fmt.Sprintf(" (+%d)", len(active)-1)
	}
	return int32(len(active)), out
}
