package shard

import (
	"slices"
	"testing"
)

// TestKeyMetaPartitionLists: every partition's key list holds exactly its live keys
// through sets, moves between partitions and clears.
func TestKeyMetaPartitionLists(t *testing.T) {
	m := newKeyMeta()
	r := newRand(3)
	model := map[uint64]uint32{} // live key -> partition
	for range 5000 {
		key := uint64(r.IntN(300))
		switch r.IntN(3) {
		case 0:
			m.clear(key)
			delete(model, key)
		default:
			p := uint32(r.IntN(5)) // 0 is "no partition": not listed
			m.set(key, p, uint16(key))
			model[key] = p
		}
	}
	for p := uint32(1); p < 5; p++ {
		var want []uint64
		for k, mp := range model {
			if mp == p {
				want = append(want, k)
			}
		}
		got := m.partKeys(p)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) || m.partLen(p) != len(want) {
			t.Fatalf("partition %d lists %v (len %d), holds %v", p, got, m.partLen(p), want)
		}
	}
	if m.partLen(0) != 0 || m.partKeys(0) != nil {
		t.Fatal("keys without a partition are listed")
	}
}
