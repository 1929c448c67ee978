package shard

import (
	"io"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/annshard/annshard/shardserver/wal"
)

// TestHistoryIDKeptAndCarried: a fresh data directory gets a history id, a restart keeps
// it, and a replica bootstrapped from a snapshot adopts the snapshot's.
func TestHistoryIDKeptAndCarried(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(testStoreConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	h := s.History()
	if h == (historyID{}) {
		t.Fatal("no history id")
	}
	upsertN(t, s, rand.New(rand.NewPCG(1, 2)), 0, 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = OpenStore(testStoreConfig(dir)); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.History() != h {
		t.Fatalf("history %s after a restart, was %s", s.History(), h)
	}
	other, err := OpenStore(testStoreConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if other.History() == h {
		t.Fatal("two fresh directories share a history id")
	}
	if err := other.Replace(s.Applied(), encodeState(t, s)); err != nil {
		t.Fatal(err)
	}
	if other.History() != h {
		t.Fatalf("bootstrapped store has history %s, its source %s", other.History(), h)
	}
	got, ok, err := readHistory(other.cfg.DataDir)
	if err != nil || !ok || got != h {
		t.Fatalf("history file after a bootstrap: %s, %v, %v", got, ok, err)
	}
}

// TestInterruptedBootstrapDropsTheOldLog: a bootstrap that wrote the new primary's
// snapshot but crashed before it reset the log leaves a log of the old history; the next
// start must not replay it on top of the snapshot.
func TestInterruptedBootstrapDropsTheOldLog(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(testStoreConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	upsertN(t, s, rand.New(rand.NewPCG(3, 4)), 0, 10) // seqs 1..6 of the old history
	for i := range 5 {
		upsertN(t, s, rand.New(rand.NewPCG(5, uint64(i))), 100+i, 1)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The new primary: another history, 3 records.
	src, err := OpenStore(testStoreConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for i := range 3 {
		upsertN(t, src, rand.New(rand.NewPCG(6, uint64(i))), 10*i, 4)
	}
	want := contents(src)
	// The first step of Replace, alone: the snapshot of the new history.
	buf := encodeState(t, src)
	if err := wal.WriteSnapshot(filepath.Join(dir, "snapshots"), src.Applied(), func(w io.Writer) error {
		_, err := io.Copy(w, buf)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStore(testStoreConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Applied() != src.Applied() || s.History() != src.History() || !reflect.DeepEqual(contents(s), want) {
		t.Fatalf("after the interrupted bootstrap: seq %d (want %d), same history %v, same contents %v",
			s.Applied(), src.Applied(), s.History() == src.History(), reflect.DeepEqual(contents(s), want))
	}
	if last := s.Log().LastSeq(); last != src.Applied() {
		t.Fatalf("log ends at %d, want %d: the old history's records are still there", last, src.Applied())
	}
}
