package shard

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/annshard/annshard/shardserver/slots"
)

// TestSearchWalksWithoutTheLock: the graph walk runs with Store.mu free, so a writer
// can take it while searches are walking (it used to wait for every walk in flight,
// and new searches queued behind it).
func TestSearchWalksWithoutTheLock(t *testing.T) {
	s, err := OpenStore(testStoreConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	upsertN(t, s, newRand(1), 0, 50)
	walks := 0
	s.walkStarts = func() {
		walks++
		if !s.mu.TryLock() {
			t.Error("Store.mu is held when the walk starts")
			return
		}
		s.mu.Unlock()
	}
	for _, part := range []string{"", "p"} {
		if _, err := s.Search(randVec(newRand(2), testDim), 5, 32, part); err != nil {
			t.Fatal(err)
		}
	}
	if walks != 2 {
		t.Fatalf("%d walks seen, want 2", walks)
	}
}

// TestPartitionSearchFollowsWrites: with ef and k above the store's size the search is
// exact, so a partition's answer must be exactly the ids the model has in it, through
// upserts that move ids between partitions, deletes, a snapshot restart and a Replace.
func TestPartitionSearchFollowsWrites(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(testStoreConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	r := newRand(11)
	model := map[string]string{} // id -> partition
	parts := []string{"", "a", "b", "c"}
	ctx := context.Background()
	check := func(when string, st *Store) {
		t.Helper()
		q := randVec(r, testDim)
		for _, p := range parts[1:] {
			hits, err := st.Search(q, 100, 500, p)
			if err != nil {
				t.Fatal(err)
			}
			var got, want []string
			for _, h := range hits {
				if h.Partition != p {
					t.Fatalf("%s: hit %+v in a search of partition %s", when, h, p)
				}
				got = append(got, h.ID)
			}
			for id, mp := range model {
				if mp == p {
					want = append(want, id)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("%s: partition %s answers %v, holds %v", when, p, got, want)
			}
		}
	}
	for round := range 30 {
		var items []upsertItem
		batch := map[string]bool{}
		for range 1 + r.IntN(6) {
			id := fmt.Sprintf("id%d", r.IntN(40))
			if batch[id] {
				continue
			}
			batch[id] = true
			p := parts[r.IntN(len(parts))]
			items = append(items, upsertItem{id: id, partition: p, vec: randVec(r, testDim), slot: slots.Of(slots.KeyOf(id, p))})
			model[id] = p
		}
		if _, _, err := s.Write(ctx, record{op: opUpsert, upserts: items}); err != nil {
			t.Fatal(err)
		}
		if round%3 == 2 {
			id := fmt.Sprintf("id%d", r.IntN(40))
			if _, _, err := s.Write(ctx, record{op: opDelete, deletes: []deleteItem{{id: id, slot: s.SlotOf(id, "")}}}); err != nil {
				t.Fatal(err)
			}
			delete(model, id)
		}
		check(fmt.Sprintf("round %d", round), s)
	}
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = OpenStore(testStoreConfig(dir)); err != nil {
		t.Fatal(err)
	}
	check("after a restart from the snapshot", s)
	buf := encodeState(t, s)
	replica, err := OpenStore(testStoreConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	upsertN(t, replica, rand.New(rand.NewPCG(3, 3)), 100, 20) // state the Replace must discard
	if err := replica.Replace(s.Applied(), buf); err != nil {
		t.Fatal(err)
	}
	check("on a replica after Replace", replica)
}
