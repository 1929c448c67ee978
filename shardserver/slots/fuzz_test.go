package slots

import (
	"encoding/json"
	"testing"
)

// FuzzParseSet: ParseSet never panics; what it accepts prints back (Set.String) to text
// that parses to the same set, with every slot in range.
func FuzzParseSet(f *testing.F) {
	for _, seed := range []string{"", "0", "0-4095", "1,3-5, 7 ,4095", "5-1", "-1", "4096", "1-2-3", "+5", " 0 - 9 ", "0,,1", "a", "99999999999999999999"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := ParseSet(text)
		if err != nil {
			return
		}
		for _, slot := range s.Slots() {
			if slot < 0 || slot >= Count {
				t.Fatalf("slot %d out of range from %q", slot, text)
			}
		}
		back, err := ParseSet(s.String())
		if err != nil || back != s {
			t.Fatalf("%q -> %q does not parse back to the same set: %v", text, s.String(), err)
		}
	})
}

// FuzzParseTable: Parse never panics; a table it accepts gives every slot an owner below
// Shards, has an epoch, and survives a JSON round trip unchanged.
func FuzzParseTable(f *testing.F) {
	even, _ := json.Marshal(Even(3))
	moved := Even(4)
	moved.Move(Range(0, 9), 4)
	mv, _ := json.Marshal(moved)
	for _, seed := range []string{string(even), string(mv), `{}`, `{"hash":"xxh64","epoch":1,"shards":1,"ranges":[{"from":0,"to":4095,"shard":0}]}`,
		`{"hash":"xxh64","epoch":1,"shards":2,"ranges":[{"from":0,"to":4095,"shard":1}],"ranges":[]}`, `null`, `[]`, `{"hash":"xxh64","epoch":-1}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := Parse(data)
		if err != nil {
			return
		}
		if tab.Epoch == 0 || tab.Shards < 1 || tab.Shards > MaxShards {
			t.Fatalf("accepted epoch %d, shards %d", tab.Epoch, tab.Shards)
		}
		for slot, o := range tab.Owners {
			if o < 0 || int(o) >= tab.Shards {
				t.Fatalf("slot %d owned by shard %d of %d", slot, o, tab.Shards)
			}
		}
		out, err := json.Marshal(tab)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(out)
		if err != nil || back != tab {
			t.Fatalf("round trip of %s: %v", out, err)
		}
	})
}
