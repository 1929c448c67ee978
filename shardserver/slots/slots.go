package slots

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Count is the number of hash slots of every index.
const Count = 4096

// Hash names the function [Of] uses; routing tables record it (the "hash" field of
// their JSON form) and [Parse] refuses a table made for another one, so a change of
// hash can never silently send keys to shards that do not hold them.
const Hash = "xxh64"

// Of returns the slot of a routing key: the partition if the vector has one, else its
// id. It is the low 12 bits of the key's XXH64 (seed 0): a mixing hash, so keys that
// differ in a few characters ("tenant0".."tenant7", "v0".."v99") land on unrelated
// slots and spread over any number of shards like random keys. Shard servers, routers
// and the operator all place keys with this one function.
func Of(key string) int {
	return int(xxhash.Sum64String(key) % Count)
}

// KeyOf returns the routing key of a vector: its partition when set, else its id.
func KeyOf(id, partition string) string {
	if partition != "" {
		return partition
	}
	return id
}

// Set is a set of slots. The zero value is empty and ready to use.
type Set struct {
	words [Count / 64]uint64
}

// All returns the set of every slot.
func All() Set {
	var s Set
	for i := range s.words {
		s.words[i] = ^uint64(0)
	}
	return s
}

// Range returns the slots from..to, both included.
func Range(from, to int) Set {
	var s Set
	for i := max(from, 0); i <= to && i < Count; i++ {
		s.Add(i)
	}
	return s
}

// Add puts slot in the set; slots outside [0, Count) are ignored.
func (s *Set) Add(slot int) {
	if slot >= 0 && slot < Count {
		s.words[slot>>6] |= 1 << (slot & 63)
	}
}

// Remove takes slot out of the set.
func (s *Set) Remove(slot int) {
	if slot >= 0 && slot < Count {
		s.words[slot>>6] &^= 1 << (slot & 63)
	}
}

// Has reports whether slot is in the set.
func (s *Set) Has(slot int) bool {
	return slot >= 0 && slot < Count && s.words[slot>>6]&(1<<(slot&63)) != 0
}

// Len returns the number of slots in the set.
func (s *Set) Len() int {
	n := 0
	for _, w := range s.words {
		n += bits.OnesCount64(w)
	}
	return n
}

// Union returns the slots in s or o.
func (s Set) Union(o Set) Set {
	for i := range s.words {
		s.words[i] |= o.words[i]
	}
	return s
}

// Intersect returns the slots in both s and o.
func (s Set) Intersect(o Set) Set {
	for i := range s.words {
		s.words[i] &= o.words[i]
	}
	return s
}

// IsEmpty reports whether the set has no slot.
func (s *Set) IsEmpty() bool { return *s == Set{} }

// Minus returns the slots in s and not in o.
func (s Set) Minus(o Set) Set {
	for i := range s.words {
		s.words[i] &^= o.words[i]
	}
	return s
}

// Slots returns the members in increasing order.
func (s *Set) Slots() []int {
	out := make([]int, 0, s.Len())
	for i := 0; i < Count; i++ {
		if s.Has(i) {
			out = append(out, i)
		}
	}
	return out
}

// String renders the set as comma-separated ranges, e.g. "0-255,1024,2000-2047";
// the empty set is "".
func (s Set) String() string {
	var b strings.Builder
	for i := 0; i < Count; {
		if !s.Has(i) {
			i++
			continue
		}
		j := i
		for j+1 < Count && s.Has(j+1) {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(i))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(j))
		}
		i = j + 1
	}
	return b.String()
}

// ErrBadSet is returned by ParseSet for text that is not a slot set.
var ErrBadSet = errors.New("bad slot set")

// ParseSet parses the format of Set.String. Whitespace around items is ignored.
func ParseSet(text string) (Set, error) {
	var s Set
	text = strings.TrimSpace(text)
	if text == "" {
		return s, nil
	}
	for _, item := range strings.Split(text, ",") {
		item = strings.TrimSpace(item)
		lo, hi, isRange := strings.Cut(item, "-")
		from, err := parseSlot(lo)
		if err != nil {
			return Set{}, fmt.Errorf("%w: %q: %v", ErrBadSet, item, err)
		}
		to := from
		if isRange {
			if to, err = parseSlot(hi); err != nil {
				return Set{}, fmt.Errorf("%w: %q: %v", ErrBadSet, item, err)
			}
		}
		if to < from {
			return Set{}, fmt.Errorf("%w: %q: range ends before it starts", ErrBadSet, item)
		}
		for i := from; i <= to; i++ {
			s.Add(i)
		}
	}
	return s, nil
}

func parseSlot(text string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(text))
	if err != nil {
		return 0, errors.New("not a number")
	}
	if n < 0 || n >= Count {
		return 0, fmt.Errorf("slot %d out of range [0, %d)", n, Count)
	}
	return n, nil
}
