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
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	shardclient "github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

const testMoveSlots = "0-9"

// newMoveWorld is two even shards plus an empty shard 2, and one Pending move of slots
// 0-9 from shard 0 to shard 2.
func newMoveWorld() (*fakeWorld, []annv1alpha1.MigrationStatus) {
	w := newFakeWorld(slots.Even(2))
	w.addShard(2)
	return w, []annv1alpha1.MigrationStatus{{ID: "m1", FromShard: 0, ToShard: 2, Slots: testMoveSlots,
		Phase: annv1alpha1.MigrationPending, Reason: moveReasonReshard}}
}

func copyMoves(ms []annv1alpha1.MigrationStatus) []annv1alpha1.MigrationStatus {
	out := make([]annv1alpha1.MigrationStatus, len(ms))
	for i := range ms {
		ms[i].DeepCopyInto(&out[i])
	}
	return out
}

// drive runs executor passes (one per reconcile) until no move is active or passes run
// out. restart(pass) drops what a pass wrote to status, as an operator killed before its
// status write would; the shards and the table keep what it did to them. Between passes
// the sources take writes to other slots and the clock moves on.
func drive(t *testing.T, w *fakeWorld, ms []annv1alpha1.MigrationStatus, passes int, restart func(pass int) bool) []annv1alpha1.MigrationStatus {
	t.Helper()
	env := w.env()
	for pass := range passes {
		before := copyMoves(ms)
		wait, err := env.runMigrations(context.Background(), ms, "", 1)
		if err != nil && !strings.Contains(err.Error(), errInjected.Error()) {
			t.Fatalf("pass %d: %v", pass, err)
		}
		if restart != nil && restart(pass) {
			ms = before
		}
		w.writeLoad(3)
		w.mu.Lock()
		w.now = w.now.Add(max(wait, 100*time.Millisecond))
		w.mu.Unlock()
		if !slices.ContainsFunc(ms, func(m annv1alpha1.MigrationStatus) bool { return migrationActive(&m) }) {
			return ms
		}
	}
	return ms
}

// checkMoved asserts the move of testMoveSlots to shard 2 completed safely: Done, the
// table gives the slots to shard 2, the source dropped and unfroze them, the
// destination owns them, and no safety rule was broken on the way.
func checkMoved(t *testing.T, w *fakeWorld, ms []annv1alpha1.MigrationStatus) {
	t.Helper()
	if len(w.violations) > 0 {
		t.Fatalf("protocol violations:\n%s", strings.Join(w.violations, "\n"))
	}
	m := ms[0]
	if m.Phase != annv1alpha1.MigrationDone || m.FinishedAt == nil {
		t.Fatalf("move is %s (%s), want Done", m.Phase, m.Message)
	}
	set := mustSet(testMoveSlots)
	if slotOwner(&w.table, set, 0, 2) != 2 {
		t.Fatalf("table at epoch %d does not give %s to shard 2", w.table.Epoch, testMoveSlots)
	}
	src, dst := w.shards[0], w.shards[2]
	if owned, frozen := src.owned.Intersect(set), src.frozen.Intersect(set); !owned.IsEmpty() || !frozen.IsEmpty() || src.dropped.String() != testMoveSlots {
		t.Fatalf("source owns %q, frozen %q, dropped %q", src.owned.String(), src.frozen.String(), src.dropped.String())
	}
	if dst.owned.String() != testMoveSlots {
		t.Fatalf("destination owns %q", dst.owned.String())
	}
	if m.Epoch != int64(w.table.Epoch) || m.Epoch < 2 {
		t.Fatalf("move recorded epoch %d, table is at %d", m.Epoch, w.table.Epoch)
	}
	if m.WritePauseMillis < 0 || m.WritePauseMillis > HandoffPauseLimit.Milliseconds() {
		t.Fatalf("write pause %d ms", m.WritePauseMillis)
	}
}

// checkRolledBack asserts a failed move left routing and the source as they were.
func checkRolledBack(t *testing.T, w *fakeWorld, ms []annv1alpha1.MigrationStatus) {
	t.Helper()
	if len(w.violations) > 0 {
		t.Fatalf("protocol violations:\n%s", strings.Join(w.violations, "\n"))
	}
	m := ms[0]
	if m.Phase != annv1alpha1.MigrationFailed || m.FinishedAt == nil {
		t.Fatalf("move is %s (finished %v): %s; want a finished Failed", m.Phase, m.FinishedAt, m.Message)
	}
	if w.table.Epoch != 1 || w.table != slots.Even(2) {
		t.Fatalf("routing changed: epoch %d", w.table.Epoch)
	}
	if src := w.shards[0]; src.frozen.Len() != 0 || src.dropped.Len() != 0 {
		t.Fatalf("source still frozen %q, dropped %q", src.frozen.String(), src.dropped.String())
	}
	for id, im := range w.shards[2].imports {
		if im.phase != shardclient.ImportCancelled && im.phase != shardclient.ImportFailed {
			t.Fatalf("import %s left %s", id, im.phase)
		}
	}
	if !hasEvent(w, eventMigrationFailed) {
		t.Fatalf("no %s event: %v", eventMigrationFailed, w.events)
	}
}

func hasEvent(w *fakeWorld, reason string) bool {
	return slices.ContainsFunc(w.events, func(e string) bool { return strings.HasPrefix(e, reason+":") })
}

func TestMigrationHappyPath(t *testing.T) {
	w, ms := newMoveWorld()
	ms = drive(t, w, ms, 50, nil)
	checkMoved(t, w, ms)
	for _, r := range []string{eventMigrationStarted, eventSlotsHandedOff, eventMigrationDone} {
		if !hasEvent(w, r) {
			t.Errorf("no %s event: %v", r, w.events)
		}
	}
	m := ms[0]
	if m.Copied != 100 || m.Bytes != 10000 || m.Total != 20 || m.StartedAt == nil || m.ImportAttempts != 1 {
		t.Fatalf("progress not recorded: copied %d bytes %d total %d attempts %d", m.Copied, m.Bytes, m.Total, m.ImportAttempts)
	}
	if w.table.Epoch != 2 {
		t.Fatalf("one move bumped the epoch to %d, want 2", w.table.Epoch)
	}
}

// An operator killed after any pass (its status write lost) resumes from what the
// shards and the table say.
func TestMigrationResumesAfterRestartInEveryPass(t *testing.T) {
	for p := range 12 {
		t.Run("pass"+itoa(p), func(t *testing.T) {
			w, ms := newMoveWorld()
			ms = drive(t, w, ms, 60, func(pass int) bool { return pass == p })
			checkMoved(t, w, ms)
		})
	}
	t.Run("every other pass", func(t *testing.T) {
		w, ms := newMoveWorld()
		ms = drive(t, w, ms, 80, func(pass int) bool { return pass%2 == 1 })
		checkMoved(t, w, ms)
	})
}

// A failure of any call in any phase is retried; the move completes.
func TestMigrationSurvivesAFailureInEveryPhase(t *testing.T) {
	for _, op := range []string{"readTable", "Slots", "StartImport", "ImportStatus", "FreezeSlots", "writeTable",
		"FinishImport", "routersAt", "DropSlots"} {
		t.Run(op, func(t *testing.T) {
			w, ms := newMoveWorld()
			w.fail[op] = 2
			ms = drive(t, w, ms, 80, nil)
			checkMoved(t, w, ms)
			if w.calls[op] < 3 {
				t.Fatalf("%s called %d times; the failure was not exercised", op, w.calls[op])
			}
		})
	}
	t.Run("table write lands but its answer is lost", func(t *testing.T) {
		w, ms := newMoveWorld()
		w.fail["writeTable"], w.writeLandsAnyway = 1, true
		ms = drive(t, w, ms, 50, nil)
		checkMoved(t, w, ms)
		if w.table.Epoch != 2 {
			t.Fatalf("epoch %d: the table was written twice", w.table.Epoch)
		}
	})
	t.Run("destination down while copying", func(t *testing.T) {
		w, ms := newMoveWorld()
		env := w.env()
		if _, err := env.runMigrations(context.Background(), ms, "", 1); err != nil {
			t.Fatal(err)
		}
		w.shards[2].down = true
		for range 3 {
			if _, err := env.runMigrations(context.Background(), ms, "", 1); err != nil {
				t.Fatal(err)
			}
		}
		if ms[0].Phase == annv1alpha1.MigrationFailed || !strings.Contains(ms[0].Message, "destination") {
			t.Fatalf("move %s: %s", ms[0].Phase, ms[0].Message)
		}
		w.shards[2].down = false
		checkMoved(t, w, drive(t, w, ms, 50, nil))
	})
}

func TestMigrationImportFailure(t *testing.T) {
	t.Run("once: copied again", func(t *testing.T) {
		w, ms := newMoveWorld()
		w.importFails = 1
		ms = drive(t, w, ms, 60, nil)
		checkMoved(t, w, ms)
		if ms[0].ImportAttempts != 2 || w.shards[2].imports["m1.1"].phase != shardclient.ImportCancelled {
			t.Fatalf("attempts %d, first import %s", ms[0].ImportAttempts, w.shards[2].imports["m1.1"].phase)
		}
	})
	t.Run("every time: failed and rolled back", func(t *testing.T) {
		w, ms := newMoveWorld()
		w.importFails = MaxImportAttempts
		ms = drive(t, w, ms, 60, nil)
		checkRolledBack(t, w, ms)
		if ms[0].ImportAttempts != MaxImportAttempts {
			t.Fatalf("attempts %d", ms[0].ImportAttempts)
		}
	})
	t.Run("destination forgot the job", func(t *testing.T) {
		w, ms := newMoveWorld()
		env := w.env()
		for range 2 {
			if _, err := env.runMigrations(context.Background(), ms, "", 1); err != nil {
				t.Fatal(err)
			}
		}
		clear(w.shards[2].imports)
		checkMoved(t, w, drive(t, w, ms, 60, nil))
	})
}

// A destination that cannot apply the source's last write within the pause limit gets
// the slots unfrozen and another try, and the move fails, rolled back, after
// MaxHandoffAttempts; the write pause never exceeds the limit by more than a poll.
func TestMigrationHandoffTimesOut(t *testing.T) {
	for name, restart := range map[string]func(int) bool{
		"":                      nil,
		"restart on odd passes": func(p int) bool { return p%2 == 1 },
	} {
		t.Run("stalled destination "+name, func(t *testing.T) {
			w, ms := newMoveWorld()
			w.stallApply = true
			longest := time.Duration(0)
			env := w.env()
			for pass := range 200 {
				before := copyMoves(ms)
				if _, err := env.runMigrations(context.Background(), ms, "", 1); err != nil {
					t.Fatal(err)
				}
				if restart != nil && restart(pass) && ms[0].Phase != annv1alpha1.MigrationFailed {
					ms = before
				}
				if f := ms[0].FrozenAt; f != nil {
					longest = max(longest, w.now.Sub(f.Time))
				}
				w.mu.Lock()
				w.now = w.now.Add(time.Second)
				w.mu.Unlock()
				if !migrationActive(&ms[0]) {
					break
				}
			}
			checkRolledBack(t, w, ms)
			if ms[0].HandoffAttempts != MaxHandoffAttempts && restart == nil {
				t.Fatalf("handoff attempts %d", ms[0].HandoffAttempts)
			}
			if !hasEvent(w, eventHandoffTimedOut) && restart == nil {
				t.Fatalf("no %s event: %v", eventHandoffTimedOut, w.events)
			}
			if longest > HandoffPauseLimit+time.Second {
				t.Fatalf("a freeze lasted %s", longest)
			}
			if w.calls["FreezeSlots"] < 2 {
				t.Fatalf("froze %d times", w.calls["FreezeSlots"])
			}
		})
	}
	t.Run("recovers when the destination catches up", func(t *testing.T) {
		w, ms := newMoveWorld()
		w.stallApply = true
		env := w.env()
		for range 10 {
			if _, err := env.runMigrations(context.Background(), ms, "", 1); err != nil {
				t.Fatal(err)
			}
			w.now = w.now.Add(time.Second)
			if ms[0].HandoffAttempts == 1 {
				break
			}
		}
		if ms[0].HandoffAttempts != 1 || ms[0].Phase != annv1alpha1.MigrationCatchingUp || w.shards[0].frozen.Len() != 0 {
			t.Fatalf("after one timeout: %s, attempts %d, frozen %q", ms[0].Phase, ms[0].HandoffAttempts, w.shards[0].frozen.String())
		}
		w.stallApply = false
		checkMoved(t, w, drive(t, w, ms, 50, nil))
	})
}

// Another writer changed the ConfigMap between the read and the write: the handoff
// reads it again and writes on top of it.
func TestMigrationTableConflict(t *testing.T) {
	w, ms := newMoveWorld()
	env := w.env()
	write := env.writeTable
	bumped := false
	env.writeTable = func(ctx context.Context, t slots.Table, version string) error {
		if !bumped {
			bumped = true
			w.mu.Lock()
			w.version++ // a label edit: same table, new resourceVersion
			w.mu.Unlock()
		}
		return write(ctx, t, version)
	}
	for range 30 {
		if _, err := env.runMigrations(context.Background(), ms, "", 1); err != nil {
			t.Fatal(err)
		}
		w.now = w.now.Add(time.Second)
	}
	checkMoved(t, w, ms)
}

// The source drops nothing until every router routes by the new epoch.
func TestMigrationCleanupWaitsForRouters(t *testing.T) {
	w, ms := newMoveWorld()
	w.autoRouter = false
	ms = drive(t, w, ms, 30, nil)
	if ms[0].Phase != annv1alpha1.MigrationCleanup || w.shards[0].dropped.Len() != 0 {
		t.Fatalf("move %s, dropped %q before the routers adopted the epoch", ms[0].Phase, w.shards[0].dropped.String())
	}
	if !strings.Contains(ms[0].Message, "router r-0") {
		t.Fatalf("message %q does not name the router", ms[0].Message)
	}
	w.routerAt = w.table.Epoch
	checkMoved(t, w, drive(t, w, ms, 5, nil))
}

// Once the table gives the slots away, a failing destination never brings an unfreeze
// or a rollback: the executor keeps going forward.
func TestMigrationNeverUnfreezesAfterTheBump(t *testing.T) {
	w, ms := newMoveWorld()
	w.fail["FinishImport"] = 40
	ms = drive(t, w, ms, 40, nil)
	if ms[0].Phase != annv1alpha1.MigrationHandoff || w.table.Epoch != 2 {
		t.Fatalf("move %s at epoch %d", ms[0].Phase, w.table.Epoch)
	}
	if w.calls["UnfreezeSlots"] != 0 || w.calls["CancelImport"] != 0 {
		t.Fatalf("unfroze %d times, cancelled %d times after the bump", w.calls["UnfreezeSlots"], w.calls["CancelImport"])
	}
	checkMoved(t, w, drive(t, w, ms, 20, nil))
}

// Handoffs are serial and Pending moves wait for their shards and the limit.
func TestRunMigrationsLimits(t *testing.T) {
	w := newFakeWorld(slots.Even(2))
	w.addShard(2)
	ms := []annv1alpha1.MigrationStatus{
		{ID: "a", FromShard: 0, ToShard: 2, Slots: "0-9", Phase: annv1alpha1.MigrationPending},
		{ID: "b", FromShard: 1, ToShard: 2, Slots: "4000-4009", Phase: annv1alpha1.MigrationPending},
	}
	env := w.env()
	if _, err := env.runMigrations(context.Background(), ms, "", 2); err != nil {
		t.Fatal(err)
	}
	if ms[0].Phase != annv1alpha1.MigrationCopying || ms[1].Phase != annv1alpha1.MigrationPending || !strings.Contains(ms[1].Message, "queued") {
		t.Fatalf("two moves into shard 2 at once: %s, %s (%s)", ms[0].Phase, ms[1].Phase, ms[1].Message)
	}
	blocked := []annv1alpha1.MigrationStatus{{ID: "c", FromShard: 1, ToShard: 0, Slots: "4000", Phase: annv1alpha1.MigrationPending}}
	if _, err := env.runMigrations(context.Background(), blocked, "shard 1 rolls out", 2); err != nil {
		t.Fatal(err)
	}
	if blocked[0].Phase != annv1alpha1.MigrationPending || !strings.Contains(blocked[0].Message, "rolls out") {
		t.Fatalf("a blocked move started: %s (%s)", blocked[0].Phase, blocked[0].Message)
	}
	ms = drive(t, w, ms, 100, nil)
	for _, m := range ms {
		if m.Phase != annv1alpha1.MigrationDone {
			t.Fatalf("%s: %s (%s)", m.ID, m.Phase, m.Message)
		}
	}
	if w.table.Epoch != 3 || len(w.violations) > 0 {
		t.Fatalf("epoch %d, violations %v", w.table.Epoch, w.violations)
	}
}

func TestMigrationSummaryAndPrune(t *testing.T) {
	ms := []annv1alpha1.MigrationStatus{
		{ID: "a", Phase: annv1alpha1.MigrationDone},
		{ID: "b", FromShard: 0, ToShard: 2, Phase: annv1alpha1.MigrationCatchingUp, Copied: 50, Total: 200, Lag: 12, BytesPerSecond: 2_500_000},
		{ID: "c", FromShard: 1, ToShard: 2, Phase: annv1alpha1.MigrationPending},
	}
	n, sum := migrationSummary(ms)
	if n != 2 || sum != "CatchingUp 0->2 25% lag 12 2.5 MB/s (+1)" {
		t.Fatalf("summary %d %q", n, sum)
	}
	if n, sum := migrationSummary(ms[:1]); n != 0 || sum != "" {
		t.Fatalf("summary of finished moves %d %q", n, sum)
	}
	var many []annv1alpha1.MigrationStatus
	for i := range keepFinishedMigrations + 3 {
		many = append(many, annv1alpha1.MigrationStatus{ID: itoa(i), Phase: annv1alpha1.MigrationDone})
	}
	many = append(many, annv1alpha1.MigrationStatus{ID: "live", Phase: annv1alpha1.MigrationCopying})
	got := pruneMigrations(many)
	if len(got) != keepFinishedMigrations+1 || got[0].ID != "3" || got[len(got)-1].ID != "live" {
		t.Fatalf("pruned to %d rows, first %s", len(got), got[0].ID)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// No handoff while the destination's read replicas lag behind its primary: the routers
// would read the moved slots from them at the new epoch.
func TestMigrationHandoffWaitsForDestinationReplicas(t *testing.T) {
	w, ms := newMoveWorld()
	w.replicaLag[2] = HandoffMaxLag + 1
	ms = drive(t, w, ms, 20, nil)
	if ms[0].Phase != annv1alpha1.MigrationCatchingUp || w.calls["FreezeSlots"] != 0 || !strings.Contains(ms[0].Message, "replicas") {
		t.Fatalf("move %s (%s), froze %d times while the replicas lag", ms[0].Phase, ms[0].Message, w.calls["FreezeSlots"])
	}
	w.replicaLag[2] = 3
	checkMoved(t, w, drive(t, w, ms, 20, nil))
}

// The write pause is the time from the freeze to the table write: here three polls of a
// destination still applying the source's last records.
func TestMigrationRecordsTheWritePause(t *testing.T) {
	w, ms := newMoveWorld()
	w.slowApply = 3
	ms = drive(t, w, ms, 50, nil)
	checkMoved(t, w, ms)
	if want := 3 * handoffPoll.Milliseconds(); ms[0].WritePauseMillis != want {
		t.Fatalf("write pause %d ms, want %d", ms[0].WritePauseMillis, want)
	}
	if !slices.ContainsFunc(w.events, func(e string) bool { return strings.Contains(e, "writes paused 60ms") }) {
		t.Fatalf("no event names the pause: %v", w.events)
	}
}

// TestOwnsNoSlot: an emptied shard is removed, with its data, only when its slot state
// clearly says it owns nothing; a state that does not parse keeps it.
func TestOwnsNoSlot(t *testing.T) {
	for _, tc := range []struct {
		owned   string
		empty   bool
		wantErr bool
	}{
		{"", true, false},
		{"  ", true, false},
		{"0-4095", false, false},
		{"7", false, false},
		{"12-3", false, true},
		{"x", false, true},
		{"0-99999", false, true},
	} {
		empty, err := ownsNoSlot(&shardclient.SlotsState{Owned: tc.owned})
		if empty != tc.empty || (err != nil) != tc.wantErr {
			t.Errorf("ownsNoSlot(%q) = %v, %v; want %v, error %v", tc.owned, empty, err, tc.empty, tc.wantErr)
		}
	}
}
