package slots

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

func TestOfIsStableAndSpread(t *testing.T) {
	if Of("acme") != Of("acme") {
		t.Fatal("Of is not deterministic")
	}
	// Pinned values: the slot of a key is part of the on-disk and on-wire contract
	// (XXH64 of "" is 0xef46db3751d8e999, whose low 12 bits are 0x999).
	for key, want := range map[string]int{"": 0x999, "a1": 2704, "acme": 3084, "p0": 3365} {
		if got := Of(key); got != want || got < 0 || got >= Count {
			t.Fatalf("Of(%q) = %d, want %d", key, got, want)
		}
	}
	counts := make([]int, 16)
	for i := range 64000 {
		counts[Of(fmt.Sprintf("id-%d", i))*16/Count]++
	}
	for i, c := range counts {
		if c < 3400 || c > 4600 {
			t.Errorf("bucket %d has %d of 64000 keys; the hash is skewed", i, c)
		}
	}
}

func TestKeyOf(t *testing.T) {
	if KeyOf("id", "") != "id" || KeyOf("id", "p") != "p" {
		t.Fatal("KeyOf must prefer the partition")
	}
}

func TestSetStringRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		set  Set
		want string
	}{
		{"empty", Set{}, ""},
		{"one", Range(7, 7), "7"},
		{"range", Range(0, 255), "0-255"},
		{"mixed", Range(0, 3).Union(Range(10, 10)).Union(Range(4090, 4095)), "0-3,10,4090-4095"},
		{"all", All(), "0-4095"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.set.String(); got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
			back, err := ParseSet(tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if back != tt.set {
				t.Fatalf("ParseSet(%q) does not round trip", tt.want)
			}
		})
	}
}

func TestParseSetRejects(t *testing.T) {
	for _, in := range []string{"x", "5-2", "4096", "-1", "1-", "1,,2", "0-4096"} {
		if _, err := ParseSet(in); !errors.Is(err, ErrBadSet) {
			t.Errorf("ParseSet(%q) err = %v, want ErrBadSet", in, err)
		}
	}
}

func TestSetOps(t *testing.T) {
	s := Range(0, 99)
	s.Remove(50)
	if s.Has(50) || !s.Has(49) || s.Len() != 99 {
		t.Fatalf("Remove/Has/Len wrong: %v", s)
	}
	if got := Range(0, 9).Minus(Range(5, 20)).String(); got != "0-4" {
		t.Fatalf("Minus = %q", got)
	}
	s.Add(-1)
	s.Add(Count)
	if s.Len() != 99 {
		t.Fatal("out-of-range Add changed the set")
	}
}

func TestEvenCoversEverySlot(t *testing.T) {
	for _, shards := range []int{1, 2, 3, 4, 7, 256} {
		tab := Even(shards)
		if tab.Epoch != 1 || tab.Shards != shards {
			t.Fatalf("Even(%d): epoch %d shards %d", shards, tab.Epoch, tab.Shards)
		}
		total := 0
		for k := range shards {
			n := tab.SlotsOf(k)
			l := n.Len()
			if l < Count/shards || l > Count/shards+1 {
				t.Fatalf("Even(%d): shard %d owns %d slots", shards, k, l)
			}
			total += l
		}
		if total != Count {
			t.Fatalf("Even(%d) covers %d slots", shards, total)
		}
	}
}

func TestTableJSONRoundTrip(t *testing.T) {
	tab := Even(4)
	tab.Move(Range(0, 9), 4)
	data, err := json.Marshal(tab)
	if err != nil {
		t.Fatal(err)
	}
	var back Table
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back != tab || back.Epoch != 2 || back.Shards != 5 {
		t.Fatalf("round trip changed the table: %s", data)
	}
	if back.ShardOf(5) != 4 || back.ShardOf(1024) != 1 || back.ShardOfKey("k") != tab.ShardOf(Of("k")) {
		t.Fatal("ShardOf wrong after round trip")
	}
}

func TestTableJSONRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":   `{`,
		"no epoch":   `{"hash":"xxh64","epoch":0,"shards":1,"ranges":[{"from":0,"to":4095,"shard":0}]}`,
		"gap":        `{"hash":"xxh64","epoch":1,"shards":1,"ranges":[{"from":0,"to":4094,"shard":0}]}`,
		"overlap":    `{"hash":"xxh64","epoch":1,"shards":1,"ranges":[{"from":0,"to":4095,"shard":0},{"from":3,"to":3,"shard":0}]}`,
		"bad shard":  `{"hash":"xxh64","epoch":1,"shards":1,"ranges":[{"from":0,"to":4095,"shard":1}]}`,
		"bad range":  `{"hash":"xxh64","epoch":1,"shards":1,"ranges":[{"from":0,"to":4096,"shard":0}]}`,
		"no shards":  `{"hash":"xxh64","epoch":1,"shards":0,"ranges":[]}`,
		"too many":   `{"hash":"xxh64","epoch":1,"shards":257,"ranges":[{"from":0,"to":4095,"shard":0}]}`,
		"backwards":  `{"hash":"xxh64","epoch":1,"shards":1,"ranges":[{"from":5,"to":1,"shard":0}]}`,
		"empty body": `{}`,
		"no hash":    `{"epoch":1,"shards":1,"ranges":[{"from":0,"to":4095,"shard":0}]}`,
		"other hash": `{"hash":"crc32c","epoch":1,"shards":1,"ranges":[{"from":0,"to":4095,"shard":0}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte(in)); !errors.Is(err, ErrBadTable) {
				t.Fatalf("err = %v, want ErrBadTable", err)
			}
		})
	}
}
