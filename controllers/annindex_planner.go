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
	"cmp"
	"fmt"
	"slices"
	"time"

	"k8s.io/utils/ptr"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/slots"
)

// The planner's rules for load-driven moves (a reshard ignores them: spec.shards is an
// order, not a hint).
const (
	// SkewSamples is how many consecutive load intervals in a row must show the same
	// shard over the skew threshold before slots move: a burst is not a trend.
	SkewSamples = 6
	// MinRebalanceLoad is the slot-attributable load (operations per second) below which
	// a shard is never called hot: a few requests per second are noise.
	MinRebalanceLoad = 5.0
	// SlotCooldown is how long a slot that moved (or failed to) stays put: no ping-pong.
	SlotCooldown = 30 * time.Minute
	// MaxRebalanceSlots bounds the slots of one load-driven move.
	MaxRebalanceSlots = 64
	// minSlotShare: a slot carrying less than this share of the hot shard's load is not
	// worth a move on its own (it may still ride along as a neighbour).
	minSlotShare = 0.02
)

// Reasons a move is planned, kept in status.migrations[].reason.
const (
	moveReasonReshard   = "Reshard"
	moveReasonRebalance = "Rebalance"
)

// shardLoadSample is the slot-attributable load of one interval: per slot, the queries
// scoped to it and the writes to it, per second.
type shardLoadSample struct {
	Queries map[int]float64
	Writes  map[int]float64
}

// planInput is everything the planner decides on. It is built from the scope; the
// planner itself does no I/O, so it is table-tested.
type planInput struct {
	Table slots.Table
	// Shards is spec.shards.
	Shards int32
	// Ready says, per shard, that its primary is ready; a move needs both ends ready.
	Ready map[int32]bool
	// Blocked, when not empty, says why no move may start (a rollout, a degraded shard).
	Blocked string
	// Migrations are status.migrations: the active ones hold their slots and shards,
	// the recent ones put their slots in cooldown.
	Migrations  []annv1alpha1.MigrationStatus
	Rebalancing annv1alpha1.RebalancingSpec
	// Load is the recent per-interval slot load, oldest first; empty when unknown.
	Load []shardLoadSample
	// ReplicaRoom says, per shard, that the autoscaler may still add a read replica.
	ReplicaRoom map[int32]bool
	Now         time.Time
}

// plannedMove is one move the planner starts.
type plannedMove struct {
	From, To int32
	Slots    slots.Set
	Reason   string
}

// migrationPlan is the planner's answer: moves to start now, whether the table may
// drop its emptied shards (Shrink: every shard at or past spec.shards owns nothing and
// nothing moves), and why nothing more happens (Waiting), for status and logs.
type migrationPlan struct {
	Moves   []plannedMove
	Shrink  bool
	Waiting string
}

// evenShare is what shard k of n owns in an even table: Count/n, one more for the first
// Count%n shards.
func evenShare(k, n int) int {
	if k >= n {
		return 0
	}
	s := slots.Count / n
	if k < slots.Count%n {
		s++
	}
	return s
}

// planMigrations decides which moves to add to status.migrations. A reshard comes
// first and is planned whole, once: when the table's shard count differs from
// spec.shards, a shard at or past spec.shards owns slots, or a shard below it owns none,
// and no reshard move is in flight. Every shard then ends with an even share, moving as
// few slots as possible: growing, the shards over their share give exactly the excess;
// shrinking, only the removed shards give. The executor starts the planned moves as the
// limits allow (rebalancing.maxConcurrentMigrations, one move out of and one into a
// shard at a time), each once both primaries are ready, so new shards are filled once
// their StatefulSets are up. A failed reshard move is planned again after
// ReshardRetryAfter. Only when no reshard is due does load skew move slots, one move at a
// time, never while Blocked.
func planMigrations(in planInput) migrationPlan {
	var plan migrationPlan
	n := int(max(in.Shards, 1))
	width := max(in.Table.Shards, n)
	counts := make([]int, width)
	for _, o := range in.Table.Owners {
		counts[o]++
	}
	active, reshardActive := 0, false
	busyOut, busyIn := map[int32]bool{}, map[int32]bool{}
	var inFlight slots.Set
	for i := range in.Migrations {
		m := &in.Migrations[i]
		if !migrationActive(m) {
			continue
		}
		active++
		reshardActive = reshardActive || m.Reason == moveReasonReshard
		busyOut[m.FromShard], busyIn[m.ToShard] = true, true
		inFlight = inFlight.Union(mustSet(m.Slots))
	}
	due, removing := in.Table.Shards < n, false
	for k := range width {
		removing = removing || (k >= n && counts[k] > 0)
		due = due || (k < n && counts[k] == 0)
	}
	due = due || removing || retryReshard(in)
	switch {
	case due && reshardActive:
		plan.Waiting = "resharding: moves in flight"
		return plan
	case due:
		plan.Moves = reshardMoves(in.Table, counts, n, inFlight)
		return plan
	case in.Table.Shards > n && active == 0:
		// The removed shards own nothing: drop them from the table.
		plan.Shrink = true
		return plan
	case in.Table.Shards > n:
		plan.Waiting = "emptied shards wait for the moves in flight"
		return plan
	case in.Blocked != "":
		plan.Waiting = in.Blocked
		return plan
	case active >= int(max(in.Rebalancing.MaxConcurrentMigrations, 1)):
		plan.Waiting = fmt.Sprintf("%d moves in flight, the most rebalancing.maxConcurrentMigrations allows", active)
		return plan
	case !ptr.Deref(in.Rebalancing.Enabled, true):
		return plan
	}
	mv, why := rebalanceMove(in, busyOut, busyIn)
	if mv != nil {
		plan.Moves = []plannedMove{*mv}
	}
	plan.Waiting = why
	return plan
}

// ReshardRetryAfter is how long after a reshard move failed (and was rolled back) the
// planner plans the rest of the reshard again.
const ReshardRetryAfter = time.Minute

// retryReshard says whether the newest reshard move failed, its slots still sit on its
// source, and ReshardRetryAfter has passed.
func retryReshard(in planInput) bool {
	for i := len(in.Migrations) - 1; i >= 0; i-- {
		m := &in.Migrations[i]
		if m.Reason != moveReasonReshard {
			continue
		}
		if m.Phase != annv1alpha1.MigrationFailed || m.FinishedAt == nil || in.Now.Sub(m.FinishedAt.Time) < ReshardRetryAfter {
			return false
		}
		return slotOwner(&in.Table, mustSet(m.Slots), m.FromShard, m.ToShard) == m.FromShard
	}
	return false
}

// reshardMoves pairs the shards that give (those past n if any own slots, else those
// over their even share) with the shards under their share, in shard order; each pair
// moves min(excess, deficit) of the giver's highest slots.
func reshardMoves(tab slots.Table, counts []int, n int, inFlight slots.Set) []plannedMove {
	type need struct {
		k int32
		n int
	}
	removing := false
	for k := n; k < len(counts); k++ {
		removing = removing || counts[k] > 0
	}
	var givers, takers []need
	for k, c := range counts {
		want := evenShare(k, n)
		switch {
		case c > want && (!removing || k >= n):
			givers = append(givers, need{int32(k), c - want})
		case c < want:
			takers = append(takers, need{int32(k), want - c})
		}
	}
	var moves []plannedMove
	for _, g := range givers {
		list := tab.SlotsOf(int(g.k))
		list = list.Minus(inFlight)
		free := list.Slots()
		for ti := range takers {
			t := &takers[ti]
			amount := min(g.n, t.n, len(free))
			if amount == 0 {
				continue
			}
			var set slots.Set
			for _, s := range free[len(free)-amount:] {
				set.Add(s)
			}
			free = free[:len(free)-amount]
			moves = append(moves, plannedMove{From: g.k, To: t.k, Slots: set, Reason: moveReasonReshard})
			g.n -= amount
			t.n -= amount
		}
	}
	return moves
}

// skewView is the load picture of one interval: per shard, the slot-attributable load
// and its query part.
type skewView struct {
	load, queries []float64
	mean          float64
}

func viewOf(tab *slots.Table, s shardLoadSample) skewView {
	v := skewView{load: make([]float64, tab.Shards), queries: make([]float64, tab.Shards)}
	for slot, q := range s.Queries {
		if slot >= 0 && slot < slots.Count {
			k := tab.Owners[slot]
			v.load[k] += q
			v.queries[k] += q
		}
	}
	for slot, w := range s.Writes {
		if slot >= 0 && slot < slots.Count {
			v.load[tab.Owners[slot]] += w
		}
	}
	for _, l := range v.load {
		v.mean += l
	}
	v.mean /= float64(len(v.load))
	return v
}

// hottest returns the shard over the skew threshold with the highest load in v, or -1.
func (v skewView) hottest(skewPercent int32) int32 {
	best := int32(-1)
	for k, l := range v.load {
		if l >= MinRebalanceLoad && l > v.mean*(1+float64(skewPercent)/100) && (best < 0 || l > v.load[best]) {
			best = int32(k)
		}
	}
	return best
}

// rebalanceMove plans at most one load-driven move: the same shard must be over
// mean*(1+maxLoadSkewPercent/100) in each of the last SkewSamples intervals; a
// read-heavy hot shard that may still get replicas gets them instead; otherwise its
// hottest slots (with cold neighbours riding along) go to the coldest shard, as long as
// the move shrinks the gap between them. A slot hotter than the gap would only swap the
// roles, so it is not moved; slots in cooldown and moves back to where slots just came
// from are not planned.
func rebalanceMove(in planInput, busyOut, busyIn map[int32]bool) (*plannedMove, string) {
	if len(in.Load) < SkewSamples {
		return nil, ""
	}
	tab := &in.Table
	skew := max(in.Rebalancing.MaxLoadSkewPercent, 1)
	hot := int32(-1)
	for _, s := range in.Load[len(in.Load)-SkewSamples:] {
		h := viewOf(tab, s).hottest(skew)
		if h < 0 || (hot >= 0 && h != hot) {
			return nil, ""
		}
		hot = h
	}
	last := in.Load[len(in.Load)-1]
	v := viewOf(tab, last)
	if v.queries[hot] > v.load[hot]/2 && in.ReplicaRoom[hot] {
		return nil, fmt.Sprintf("shard %d is read-hot: replicas first", hot)
	}
	cold := int32(-1)
	for k := range v.load {
		if int32(k) != hot && in.Ready[int32(k)] && (cold < 0 || v.load[k] < v.load[cold]) {
			cold = int32(k)
		}
	}
	switch {
	case cold < 0:
		return nil, "no ready shard to take load"
	case busyOut[hot] || busyIn[cold]:
		return nil, fmt.Sprintf("shard %d or %d is already moving slots", hot, cold)
	case !in.Ready[hot]:
		return nil, fmt.Sprintf("shard %d's primary is not ready", hot)
	}
	// No ping-pong: a recent move from cold to hot is not undone.
	cooling := slots.Set{}
	for i := range in.Migrations {
		m := &in.Migrations[i]
		recent := m.FinishedAt == nil || in.Now.Sub(m.FinishedAt.Time) < SlotCooldown
		if !recent {
			continue
		}
		cooling = cooling.Union(mustSet(m.Slots))
		if m.Reason == moveReasonRebalance && m.FromShard == cold && m.ToShard == hot && m.Phase == annv1alpha1.MigrationDone {
			return nil, fmt.Sprintf("slots moved from shard %d to %d less than %s ago", cold, hot, SlotCooldown)
		}
	}
	gap := v.load[hot] - v.load[cold]
	slotLoad := func(s int) float64 { return last.Queries[s] + last.Writes[s] }
	owned := tab.SlotsOf(int(hot))
	var cands []int
	for _, s := range owned.Slots() {
		if l := slotLoad(s); l > 0 && !cooling.Has(s) && l < gap && l >= minSlotShare*v.load[hot] {
			cands = append(cands, s)
		}
	}
	slices.SortFunc(cands, func(a, b int) int {
		return cmp.Or(cmp.Compare(slotLoad(b), slotLoad(a)), cmp.Compare(a, b))
	})
	// Move at most half the gap: the hot shard then stays at least as loaded as the cold
	// one, and the gap shrinks.
	budget := gap / 2
	var set slots.Set
	moved := 0.0
	take := func(s int) bool {
		if set.Has(s) || !owned.Has(s) || cooling.Has(s) || set.Len() >= MaxRebalanceSlots {
			return false
		}
		if moved+slotLoad(s) > budget {
			return false
		}
		set.Add(s)
		moved += slotLoad(s)
		return true
	}
	for _, s := range cands {
		if !take(s) {
			continue
		}
		for d := 1; d <= 2; d++ { // neighbours ride along while they fit
			if !take(s - d) {
				break
			}
		}
		for d := 1; d <= 2; d++ {
			if !take(s + d) {
				break
			}
		}
	}
	if set.Len() == 0 || moved <= 0 {
		return nil, fmt.Sprintf("shard %d is hot but no slot can move without reversing the gap", hot)
	}
	return &plannedMove{From: hot, To: cold, Slots: set, Reason: moveReasonRebalance},
		fmt.Sprintf("shard %d carries %.0f ops/s against a mean of %.0f", hot, v.load[hot], v.mean)
}
