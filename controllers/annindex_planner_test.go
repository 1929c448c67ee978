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
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/slots"
)

var planNow = time.Date(2026, 11, 27, 20, 0, 0, 0, time.UTC)

func allReady(n int) map[int32]bool {
	out := map[int32]bool{}
	for k := range int32(n) {
		out[k] = true
	}
	return out
}

func moveStrings(p migrationPlan) []string {
	var out []string
	for _, m := range p.Moves {
		out = append(out, fmt.Sprintf("%d->%d %s %s", m.From, m.To, m.Slots.String(), m.Reason))
	}
	return out
}

// applyPlan runs the planned moves on a copy of the table, as the executor would.
func applyPlan(t slots.Table, p migrationPlan) slots.Table {
	for _, m := range p.Moves {
		t.Move(m.Slots, int(m.To))
	}
	return t
}

func TestPlanReshard(t *testing.T) {
	shrunk := slots.Even(3)
	shrunk.Move(shrunk.SlotsOf(2), 0)
	tests := []struct {
		name   string
		table  slots.Table
		shards int32
		want   []string
		shrink bool
	}{
		{"steady", slots.Even(2), 2, nil, false},
		{"2 -> 3: each old shard gives exactly its excess to the new one", slots.Even(2), 3,
			[]string{"0->2 1366-2047 Reshard", "1->2 3413-4095 Reshard"}, false},
		{"1 -> 2", slots.Even(1), 2, []string{"0->1 2048-4095 Reshard"}, false},
		{"3 -> 2: only the removed shard gives", slots.Even(3), 2,
			[]string{"2->0 3414-4095 Reshard", "2->1 2731-3413 Reshard"}, false},
		{"3 -> 2 emptied: shrink the table", shrunk, 2, nil, true},
		{"2 -> 4", slots.Even(2), 4,
			[]string{"0->2 1024-2047 Reshard", "1->3 3072-4095 Reshard"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planMigrations(planInput{Table: tt.table, Shards: tt.shards, Ready: allReady(4), Now: planNow,
				Rebalancing: annv1alpha1.RebalancingSpec{MaxConcurrentMigrations: 1}})
			if got := strings.Join(moveStrings(p), "; "); got != strings.Join(tt.want, "; ") {
				t.Fatalf("moves %q, want %q", got, strings.Join(tt.want, "; "))
			}
			if p.Shrink != tt.shrink {
				t.Fatalf("shrink %v, want %v", p.Shrink, tt.shrink)
			}
			if len(p.Moves) == 0 {
				return
			}
			after := applyPlan(tt.table, p)
			moved := 0
			for _, m := range p.Moves {
				moved += m.Slots.Len()
			}
			minimal := 0
			for k := range max(tt.table.Shards, int(tt.shards)) {
				set := after.SlotsOf(k)
				if got, want := set.Len(), evenShare(k, int(tt.shards)); got != want && !(k < int(tt.shards) && tt.table.Shards > int(tt.shards)) {
					t.Fatalf("shard %d ends with %d slots, want %d", k, got, want)
				}
				if before := tt.table.SlotsOf(k); before.Len() > evenShare(k, int(tt.shards)) {
					minimal += before.Len() - evenShare(k, int(tt.shards))
				}
			}
			if moved != minimal {
				t.Fatalf("moved %d slots, the minimum is %d", moved, minimal)
			}
		})
	}
}

func TestPlanReshardWaitsAndRetries(t *testing.T) {
	inFlight := []annv1alpha1.MigrationStatus{{ID: "a", FromShard: 0, ToShard: 2, Slots: "1366-2047", Phase: annv1alpha1.MigrationCopying, Reason: moveReasonReshard}}
	p := planMigrations(planInput{Table: slots.Even(2), Shards: 3, Ready: allReady(3), Migrations: inFlight, Now: planNow})
	if len(p.Moves) != 0 || p.Waiting == "" {
		t.Fatalf("planned %v while a reshard move is in flight", moveStrings(p))
	}
	// Half done: shard 2 got shard 0's excess, the move from shard 1 failed and rolled back.
	half := slots.Even(2)
	half.Move(slots.Range(1366, 2047), 2)
	failed := []annv1alpha1.MigrationStatus{{ID: "b", FromShard: 1, ToShard: 2, Slots: "3413-4095", Phase: annv1alpha1.MigrationFailed,
		Reason: moveReasonReshard, FinishedAt: ptrTime(planNow.Add(-10 * time.Second))}}
	in := planInput{Table: half, Shards: 3, Ready: allReady(3), Migrations: failed, Now: planNow}
	if p := planMigrations(in); len(p.Moves) != 0 {
		t.Fatalf("retried at once: %v", moveStrings(p))
	}
	in.Now = planNow.Add(ReshardRetryAfter)
	if got := strings.Join(moveStrings(planMigrations(in)), "; "); got != "1->2 3413-4095 Reshard" {
		t.Fatalf("retry planned %q", got)
	}
}

// hotLoad is SkewSamples intervals in which the given slots carry the given load (writes
// when writes is set, partition-scoped queries otherwise) and every slot 0.01.
func hotLoad(hot map[int]float64, writes bool) []shardLoadSample {
	var out []shardLoadSample
	for range SkewSamples {
		s := shardLoadSample{Queries: map[int]float64{}, Writes: map[int]float64{}}
		for slot, l := range hot {
			if writes {
				s.Writes[slot] = l
			} else {
				s.Queries[slot] = l
			}
		}
		out = append(out, s)
	}
	return out
}

func TestPlanRebalance(t *testing.T) {
	even3 := slots.Even(3) // shard 0: 0-1365, 1: 1366-2730, 2: 2731-4095
	reb := annv1alpha1.RebalancingSpec{Enabled: ptr.To(true), MaxLoadSkewPercent: 30, MaxConcurrentMigrations: 1}
	base := func() planInput {
		return planInput{Table: even3, Shards: 3, Ready: allReady(3), Rebalancing: reb, Now: planNow, ReplicaRoom: map[int32]bool{}}
	}
	// Shard 0 hot with writes on slots 10..15 (10/s each) plus 2000 (shard 1) and 3000
	// (shard 2) at 5/s: loads 60, 5, 5; mean 23.3; gap 55; budget 27.5.
	writeHot := map[int]float64{10: 10, 11: 10, 12: 10, 13: 10, 14: 10, 15: 10, 2000: 5, 3000: 5}
	tests := []struct {
		name    string
		mutate  func(*planInput)
		want    string
		waiting string
	}{
		{"balanced: nothing", func(in *planInput) {
			in.Load = hotLoad(map[int]float64{10: 10, 2000: 10, 3000: 10}, true)
		}, "", ""},
		{"write-hot: hottest slots with neighbours to the coldest shard, half the gap at most", func(in *planInput) {
			in.Load = hotLoad(writeHot, true)
		}, "0->1 8-11 Rebalance", "shard 0 carries 60"},
		{"not sustained: a burst in the last samples only", func(in *planInput) {
			in.Load = append(hotLoad(map[int]float64{10: 10, 2000: 10, 3000: 10}, true), hotLoad(writeHot, true)[:SkewSamples-1]...)
		}, "", ""},
		{"below the floor: no move", func(in *planInput) {
			in.Load = hotLoad(map[int]float64{10: 2, 2000: 0.1}, true)
		}, "", ""},
		{"read-hot with replica room: replicas first", func(in *planInput) {
			in.Load = hotLoad(writeHot, false)
			in.ReplicaRoom[0] = true
		}, "", "replicas first"},
		{"read-hot at replicas.max: slots move", func(in *planInput) {
			in.Load = hotLoad(writeHot, false)
		}, "0->1 8-11 Rebalance", ""},
		{"a single slot hotter than the gap stays", func(in *planInput) {
			in.Load = hotLoad(map[int]float64{10: 100, 2000: 20, 3000: 20}, true)
		}, "", "without reversing the gap"},
		{"cooldown: recently moved slots stay", func(in *planInput) {
			in.Load = hotLoad(writeHot, true)
			in.Migrations = []annv1alpha1.MigrationStatus{{ID: "old", FromShard: 1, ToShard: 0, Slots: "10-15", Phase: annv1alpha1.MigrationDone,
				Reason: moveReasonReshard, FinishedAt: ptrTime(planNow.Add(-time.Minute))}}
		}, "", "no slot can move"},
		{"no ping-pong: slots just moved from the cold shard to the hot one", func(in *planInput) {
			in.Load = hotLoad(writeHot, true)
			in.Migrations = []annv1alpha1.MigrationStatus{{ID: "old", FromShard: 1, ToShard: 0, Slots: "1400", Phase: annv1alpha1.MigrationDone,
				Reason: moveReasonRebalance, FinishedAt: ptrTime(planNow.Add(-time.Minute))}}
		}, "", "less than"},
		{"cooldown over: moves again", func(in *planInput) {
			in.Load = hotLoad(writeHot, true)
			in.Migrations = []annv1alpha1.MigrationStatus{{ID: "old", FromShard: 1, ToShard: 0, Slots: "10-15", Phase: annv1alpha1.MigrationDone,
				Reason: moveReasonRebalance, FinishedAt: ptrTime(planNow.Add(-SlotCooldown - time.Minute))}}
		}, "0->1 8-11 Rebalance", ""},
		{"rollout: nothing", func(in *planInput) {
			in.Load = hotLoad(writeHot, true)
			in.Blocked = "shard 1 rolls out"
		}, "", "rolls out"},
		{"limit reached", func(in *planInput) {
			in.Load = hotLoad(writeHot, true)
			in.Migrations = []annv1alpha1.MigrationStatus{{ID: "x", FromShard: 2, ToShard: 1, Slots: "3000", Phase: annv1alpha1.MigrationCopying}}
		}, "", "maxConcurrentMigrations"},
		{"disabled", func(in *planInput) {
			in.Load = hotLoad(writeHot, true)
			in.Rebalancing.Enabled = ptr.To(false)
		}, "", ""},
		{"coldest not ready: the next coldest takes it", func(in *planInput) {
			in.Load = hotLoad(map[int]float64{10: 10, 11: 10, 12: 10, 13: 10, 14: 10, 15: 10, 2000: 5, 3000: 8}, true)
			in.Ready[1] = false
		}, "0->2 8-11 Rebalance", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base()
			tt.mutate(&in)
			p := planMigrations(in)
			if got := strings.Join(moveStrings(p), "; "); got != tt.want {
				t.Fatalf("moves %q, want %q (waiting: %s)", got, tt.want, p.Waiting)
			}
			if !strings.Contains(p.Waiting, tt.waiting) {
				t.Fatalf("waiting %q, want it to say %q", p.Waiting, tt.waiting)
			}
			if len(p.Moves) == 1 {
				// The move shrinks the gap between the two shards and never reverses it.
				v := viewOf(&in.Table, in.Load[len(in.Load)-1])
				after := applyPlan(in.Table, p)
				w := viewOf(&after, in.Load[len(in.Load)-1])
				m := p.Moves[0]
				if oldGap, newGap := v.load[m.From]-v.load[m.To], w.load[m.From]-w.load[m.To]; newGap < 0 || newGap >= oldGap {
					t.Fatalf("gap %.1f -> %.1f", oldGap, newGap)
				}
			}
		})
	}
}

// Moves a reshard plans, run one after another, take an index from 2 to 3 shards and back.
func TestPlanReshardRoundTrip(t *testing.T) {
	tab := slots.Even(2)
	for _, n := range []int32{3, 2, 5, 1} {
		for range 10 {
			p := planMigrations(planInput{Table: tab, Shards: n, Ready: allReady(8), Now: planNow})
			if p.Shrink {
				tab.Shards = int(n)
				tab.Epoch++
				continue
			}
			if len(p.Moves) == 0 {
				break
			}
			tab = applyPlan(tab, p)
		}
		if tab.Shards != int(n) {
			t.Fatalf("to %d shards: the table has %d", n, tab.Shards)
		}
		for k := range int(n) {
			set := tab.SlotsOf(k)
			if set.Len() == 0 {
				t.Fatalf("to %d shards: shard %d owns nothing", n, k)
			}
		}
	}
}
