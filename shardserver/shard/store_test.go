package shard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"testing/iotest"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/slots"
	"github.com/annshard/annshard/shardserver/wal"
)

func testStoreConfig(dir string) StoreConfig {
	return StoreConfig{DataDir: dir, Index: hnsw.Config{Dim: testDim, Metric: hnsw.L2, M: 8, EfConstruction: 32, Seed: 1},
		WAL: wal.Options{Sync: wal.SyncInterval, SegmentBytes: 4 << 10}}
}

// get is Store.GetHiding for a test: an error fails it.
func get(t testing.TB, s *Store, id string, hidden *slots.Set) (client.Vector, bool) {
	t.Helper()
	v, ok, err := s.GetHiding(id, "", hidden)
	if err != nil {
		t.Fatal(err)
	}
	return v, ok
}

// contents is the store's observable state: id -> partition and vector.
func contents(s *Store) map[string]string {
	out := map[string]string{}
	s.mu.RLock()
	ids := make([]string, 0, len(s.st.ids))
	for id := range s.st.ids {
		ids = append(ids, id)
	}
	s.mu.RUnlock()
	for _, id := range ids {
		v, ok, err := s.Get(id, "")
		if err != nil {
			panic(err)
		}
		if ok {
			out[id] = fmt.Sprint(v.Partition, v.Vector)
		}
	}
	return out
}

// encodeState returns what a snapshot of s would hold now.
func encodeState(t testing.TB, s *Store) *bytes.Buffer {
	t.Helper()
	s.applyMu.Lock()
	v := s.view()
	s.applyMu.Unlock()
	defer v.img.Release()
	var buf bytes.Buffer
	if _, err := writeState(&buf, v); err != nil {
		t.Fatal(err)
	}
	return &buf
}

func upsertN(t testing.TB, s *Store, r *rand.Rand, from, n int) {
	t.Helper()
	items := make([]upsertItem, n)
	for i := range items {
		id := fmt.Sprintf("k%d", from+i)
		part := ""
		if i%3 == 0 {
			part = "p"
		}
		items[i] = upsertItem{id: id, partition: part, vec: randVec(r, testDim), slot: slots.Of(slots.KeyOf(id, part))}
	}
	if _, _, err := s.Write(context.Background(), record{op: opUpsert, upserts: items}); err != nil {
		t.Fatal(err)
	}
}

func TestRecovery(t *testing.T) {
	tests := []struct {
		name     string
		snapshot []int // snapshot after these batch numbers
	}{
		{"wal only", nil},
		{"snapshot then wal", []int{3}},
		{"two snapshots trim the wal", []int{2, 5}},
		{"snapshot at the end", []int{7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := OpenStore(testStoreConfig(dir))
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(5, 6))
			for b := range 8 {
				upsertN(t, s, r, b*10, 15) // overlaps the previous batch: replaces
				if b%2 == 1 {
					del := []deleteItem{{id: fmt.Sprintf("k%d", b*10), slot: s.SlotOf(fmt.Sprintf("k%d", b*10), "")}}
					if _, _, err := s.Write(context.Background(), record{op: opDelete, deletes: del}); err != nil {
						t.Fatal(err)
					}
				}
				for _, at := range tt.snapshot {
					if at == b {
						if err := s.Snapshot(); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			want, wantSeq, wantLen := contents(s), s.Applied(), s.Len()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := OpenStore(testStoreConfig(dir))
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			if s2.Applied() != wantSeq || s2.Len() != wantLen || !reflect.DeepEqual(contents(s2), want) {
				t.Fatalf("after reopen: seq %d/%d, len %d/%d, same contents %v", s2.Applied(), wantSeq, s2.Len(), wantLen, reflect.DeepEqual(contents(s2), want))
			}
			// Keys keep growing after recovery: a new id does not reuse a live key.
			upsertN(t, s2, r, 1000, 1)
			if s2.Len() != wantLen+1 {
				t.Fatalf("len %d after one more insert, want %d", s2.Len(), wantLen+1)
			}
			res, err := s2.Search(randVec(r, testDim), 5, 32, "p")
			if err != nil || len(res) != 5 {
				t.Fatalf("partition search after recovery: %v, %v", res, err)
			}
			for _, h := range res {
				if h.Partition != "p" {
					t.Fatalf("hit %+v outside partition", h)
				}
			}
		})
	}
}

func TestCorruptNewestSnapshotFallsBack(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(testStoreConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 8))
	upsertN(t, s, r, 0, 20)
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	upsertN(t, s, r, 20, 20)
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	upsertN(t, s, r, 40, 20)
	want := contents(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path, seq, _, err := wal.LatestSnapshot(filepath.Join(dir, "snapshots"))
	if err != nil || seq != 2 {
		t.Fatalf("latest snapshot %s at %d: %v", path, seq, err)
	}
	b, _ := os.ReadFile(path)
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenStore(testStoreConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := contents(s2); !reflect.DeepEqual(got, want) || s2.Applied() != 3 {
		t.Fatalf("fallback recovery: %d vectors (want %d), seq %d", len(got), len(want), s2.Applied())
	}
}

func TestReplicatedOrder(t *testing.T) {
	s, err := OpenStore(testStoreConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec := encodeUpsert(testDim, []upsertItem{{id: "a", vec: make([]float32, testDim)}})
	ctx := context.Background()
	if err := s.ApplyReplicated(ctx, 2, rec); !errors.Is(err, errGap) {
		t.Fatalf("gap accepted: %v", err)
	}
	if err := s.ApplyReplicated(ctx, 1, rec); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyReplicated(ctx, 1, rec); err != nil || s.Applied() != 1 || s.Log().LastSeq() != 1 {
		t.Fatalf("duplicate not skipped: %v, applied %d", err, s.Applied())
	}
	if err := s.ApplyReplicated(ctx, 2, []byte("Zjunk")); !errors.Is(err, errBadRecord) || s.Applied() != 1 {
		t.Fatalf("bad record: %v", err)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	var set slots.Set
	set.Add(0)
	set.Add(77)
	set.Add(4095)
	tests := []struct {
		name string
		rec  record
	}{
		{"upsert", record{op: opUpsert, upserts: []upsertItem{
			{id: "a", vec: []float32{1, 2, 3}, slot: slots.Of("a")},
			{id: "b", partition: "p", vec: []float32{-1, 0, 9}, slot: slots.Of("p")}}}},
		{"delete", record{op: opDelete, partition: "p", deletes: []deleteItem{{id: "a", slot: 12}, {id: "ü", slot: 4095}}}},
		{"drop", record{op: opDrop, drop: set}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := encodeRecord(3, tt.rec)
			got, err := decodeRecord(data)
			if err != nil || !reflect.DeepEqual(got, tt.rec) {
				t.Fatalf("round trip = %+v, %v; want %+v", got, err, tt.rec)
			}
			for cut := range len(data) {
				if _, err := decodeRecord(data[:cut]); !errors.Is(err, errBadRecord) {
					t.Fatalf("truncated at %d: err %v", cut, err)
				}
			}
			if _, err := decodeRecord(append(data, 0)); !errors.Is(err, errBadRecord) {
				t.Fatal("trailing byte accepted")
			}
		})
	}
}

func TestReplaceRefusesCutOrPaddedStream(t *testing.T) {
	src, err := OpenStore(testStoreConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	upsertN(t, src, rand.New(rand.NewPCG(1, 1)), 0, 30)
	buf := encodeState(t, src)
	dst, err := OpenStore(testStoreConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	full := buf.Bytes()
	tests := []struct {
		name string
		r    io.Reader
	}{
		{"cut", bytes.NewReader(full[:len(full)-1])},
		{"padded", bytes.NewReader(append(slices.Clone(full), 0))},
		{"stream error at the end", io.MultiReader(bytes.NewReader(full), iotest.ErrReader(errors.New("checksum mismatch")))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := dst.Replace(7, tt.r); err == nil {
				t.Fatal("accepted")
			}
			if dst.Applied() != 0 || dst.Len() != 0 {
				t.Fatal("a refused snapshot changed the store")
			}
		})
	}
	if err := dst.Replace(7, bytes.NewReader(full)); err != nil || dst.Applied() != 7 || !reflect.DeepEqual(contents(dst), contents(src)) {
		t.Fatalf("clean stream: %v", err)
	}
}

func TestReplayRefusesOtherDimension(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(testStoreConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	upsertN(t, s, rand.New(rand.NewPCG(1, 1)), 0, 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := testStoreConfig(dir)
	cfg.Index.Dim = testDim + 1
	if _, err := OpenStore(cfg); !errors.Is(err, hnsw.ErrDimension) {
		t.Fatalf("OpenStore with another dimension: %v", err)
	}
	r, err := OpenStore(testStoreConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rec := encodeUpsert(testDim+1, []upsertItem{{id: "a", vec: make([]float32, testDim+1)}})
	if err := r.ApplyReplicated(context.Background(), 1, rec); !errors.Is(err, hnsw.ErrDimension) || r.Applied() != 0 {
		t.Fatalf("replicated record of another dimension: %v", err)
	}
}
