package slots

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ConfigMapKey is the key of the routing table in the routing ConfigMap.
const ConfigMapKey = "routing.json"

// MaxShards bounds the number of shards of one index.
const MaxShards = 256

// ConfigMapName returns the name of the routing ConfigMap of an index.
func ConfigMapName(index string) string { return index + "-routing" }

// Table maps every slot to the shard that owns it. Epoch grows on every change, so a
// reader can tell a newer table from an older one. Shards is the number of shards of the
// index, which may exceed the highest owner while a new shard has no slots yet.
type Table struct {
	Epoch  uint64
	Shards int
	Owners [Count]int32
}

// Even spreads the slots over shards in contiguous, near-equal ranges, at epoch 1.
func Even(shards int) Table {
	shards = min(max(shards, 1), MaxShards)
	t := Table{Epoch: 1, Shards: shards}
	for slot := range t.Owners {
		t.Owners[slot] = int32(slot * shards / Count)
	}
	return t
}

// ShardOf returns the shard that owns slot.
func (t *Table) ShardOf(slot int) int { return int(t.Owners[slot]) }

// ShardOfKey returns the shard that owns the slot of key.
func (t *Table) ShardOfKey(key string) int { return int(t.Owners[Of(key)]) }

// SlotsOf returns the set of slots owned by shard.
func (t *Table) SlotsOf(shard int) Set {
	var s Set
	for slot, o := range t.Owners {
		if int(o) == shard {
			s.Add(slot)
		}
	}
	return s
}

// Move gives the slots in s to shard, growing Shards if needed, and increments the epoch.
func (t *Table) Move(s Set, shard int) {
	for _, slot := range s.Slots() {
		t.Owners[slot] = int32(shard)
	}
	t.Shards = max(t.Shards, shard+1)
	t.Epoch++
}

// wireTable is the JSON form: owners as ranges, so the ConfigMap stays small and readable.
type wireTable struct {
	Hash   string      `json:"hash"`
	Epoch  uint64      `json:"epoch"`
	Shards int         `json:"shards"`
	Ranges []wireRange `json:"ranges"`
}

type wireRange struct {
	From  int `json:"from"`
	To    int `json:"to"`
	Shard int `json:"shard"`
}

// MarshalJSON encodes the table as {"hash","epoch","shards","ranges":[{"from","to","shard"}]};
// hash is always [Hash].
func (t Table) MarshalJSON() ([]byte, error) {
	w := wireTable{Hash: Hash, Epoch: t.Epoch, Shards: t.Shards, Ranges: []wireRange{}}
	for i := 0; i < Count; {
		j := i
		for j+1 < Count && t.Owners[j+1] == t.Owners[i] {
			j++
		}
		w.Ranges = append(w.Ranges, wireRange{From: i, To: j, Shard: int(t.Owners[i])})
		i = j + 1
	}
	return json.Marshal(w)
}

// ErrBadTable is returned when a routing table does not cover every slot exactly once.
var ErrBadTable = errors.New("bad routing table")

// UnmarshalJSON decodes and validates a table: made for the slot hash [Hash], every slot
// covered exactly once, shards in [0, shards), epoch at least 1. A table of another or
// no hash is refused (ErrBadTable naming both): its slots would mean other keys.
func (t *Table) UnmarshalJSON(data []byte) error {
	var w wireTable
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("%w: %v", ErrBadTable, err)
	}
	if w.Hash != Hash {
		got := w.Hash
		if got == "" {
			got = "none (a table written before slot hashes were recorded)"
		}
		return fmt.Errorf("%w: made for slot hash %s, this build places keys with %s; rewrite the table (recompute every key's slot) rather than reinterpret it",
			ErrBadTable, got, Hash)
	}
	if w.Epoch == 0 {
		return fmt.Errorf("%w: epoch must be at least 1", ErrBadTable)
	}
	if w.Shards < 1 || w.Shards > MaxShards {
		return fmt.Errorf("%w: shards %d out of range [1, %d]", ErrBadTable, w.Shards, MaxShards)
	}
	var seen Set
	var out Table
	out.Epoch, out.Shards = w.Epoch, w.Shards
	for _, r := range w.Ranges {
		if r.From < 0 || r.To >= Count || r.To < r.From {
			return fmt.Errorf("%w: range %d-%d out of [0, %d)", ErrBadTable, r.From, r.To, Count)
		}
		if r.Shard < 0 || r.Shard >= w.Shards {
			return fmt.Errorf("%w: range %d-%d names shard %d of %d", ErrBadTable, r.From, r.To, r.Shard, w.Shards)
		}
		for slot := r.From; slot <= r.To; slot++ {
			if seen.Has(slot) {
				return fmt.Errorf("%w: slot %d assigned twice", ErrBadTable, slot)
			}
			seen.Add(slot)
			out.Owners[slot] = int32(r.Shard)
		}
	}
	if n := seen.Len(); n != Count {
		return fmt.Errorf("%w: %d of %d slots assigned", ErrBadTable, n, Count)
	}
	*t = out
	return nil
}

// Parse decodes a table in the ConfigMap format and validates it.
func Parse(data []byte) (Table, error) {
	var t Table
	err := t.UnmarshalJSON(data)
	return t, err
}
