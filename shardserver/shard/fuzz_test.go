package shard

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

// FuzzDecodeRecord: a WAL payload (from the log or a primary's replication stream)
// decodes without panicking or allocating beyond its size, and one that decodes
// encodes back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	var drop slots.Set
	drop.Add(3)
	drop.Add(4095)
	for _, r := range []record{
		{op: opUpsert, upserts: []upsertItem{{id: "a", partition: "p", vec: []float32{1, 2, 3}}, {id: "b", vec: []float32{0, -1, 3e38}}}},
		{op: opUpsert},
		{op: opDelete, partition: "p", deletes: []deleteItem{{id: "a", slot: 7}, {id: "ü", slot: 4095}}},
		{op: opDrop, drop: drop},
	} {
		f.Add(encodeRecord(3, r))
	}
	f.Add([]byte{})
	f.Add([]byte{'U', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{'D', 0, 0, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRecord(data)
		if err != nil {
			if !errors.Is(err, errBadRecord) {
				t.Fatalf("error without errBadRecord: %v", err)
			}
			return
		}
		dim := 0
		if r.op == opUpsert {
			dim = int(binary.LittleEndian.Uint32(data[1:]))
		}
		if back := encodeRecord(dim, r); !bytes.Equal(back, data) {
			t.Fatalf("%q decodes to %+v, which encodes to %q", data, r, back)
		}
		for _, it := range r.upserts {
			if it.slot != slots.Of(slots.KeyOf(it.id, it.partition)) {
				t.Fatalf("upsert of %q got slot %d", it.id, it.slot)
			}
		}
	})
}

// FuzzDecodeDelete: a batch delete body is refused with an *APIError or is a valid batch.
func FuzzDecodeDelete(f *testing.F) {
	for _, seed := range []string{`{"ids":["a","b"]}`, `{"ids":["a"],"partition":"p"}`, `{"ids":[]}`, `{"ids":[""]}`,
		`{"ids":["a"],"ids":["b"]}`, `{"ids":["a\u0000"]}`, `{"ids":[1]}`, `{"IDs":["a"]}`, `null`, `{"ids":["a"]} x`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := fuzzSchema.decodeDelete(bytes.NewReader(data))
		if err != nil {
			if _, ok := err.(*client.APIError); !ok {
				t.Fatalf("error %T is not an *APIError: %v", err, err)
			}
			return
		}
		if len(req.IDs) == 0 || len(req.IDs) > fuzzSchema.MaxBatch {
			t.Fatalf("accepted a batch of %d", len(req.IDs))
		}
		for _, id := range req.IDs {
			if client.CheckID("id", id) != nil {
				t.Fatalf("accepted id %q", id)
			}
		}
		if client.CheckPartition("partition", req.Partition) != nil {
			t.Fatalf("accepted partition %q", req.Partition)
		}
	})
}

// FuzzSnapshot feeds a snapshot payload to Store.Replace, the path of a replica
// bootstrapping from its primary (a local snapshot file goes through the same reader
// after its checksum). Replace must not panic, must leave the store as it was when it
// refuses, and a state it accepts must survive a write, a snapshot of its own and a
// restart unchanged.
func FuzzSnapshot(f *testing.F) {
	for i, n := range []int{0, 1, 40} {
		s, err := OpenStore(testStoreConfig(f.TempDir()))
		if err != nil {
			f.Fatal(err)
		}
		r := rand.New(rand.NewPCG(uint64(i), 9))
		if n > 0 {
			upsertN(f, s, r, 0, n)
		}
		if n > 1 {
			if _, _, err := s.Write(context.Background(), record{op: opDelete, deletes: []deleteItem{{id: "k1", slot: slots.Of("k1")}}}); err != nil {
				f.Fatal(err)
			}
		}
		f.Add(encodeState(f, s).Bytes())
		s.Close()
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The header's key count sizes a slice of one entry per key ever assigned (up to
		// 2^40 by the format, trusted in a checksummed file this code wrote): a mutated
		// count is not input to survive, so counts beyond 2^20 are not run.
		if at := len(snapshotMagic) + len(historyID{}); len(data) >= at+8 && string(data[:len(snapshotMagic)]) == snapshotMagic &&
			binary.LittleEndian.Uint64(data[at:]) > 1<<20 {
			t.Skip("key count beyond 2^20")
		}
		dir := t.TempDir()
		s, err := OpenStore(testStoreConfig(dir))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { s.Close() }()
		if err := s.Replace(5, bytes.NewReader(data)); err != nil {
			if s.Applied() != 0 || s.Len() != 0 {
				t.Fatalf("a refused snapshot changed the store: applied %d, %d vectors", s.Applied(), s.Len())
			}
			return
		}
		vec := make([]float32, testDim)
		vec[0] = 1
		if _, _, err := s.Write(context.Background(), record{op: opUpsert, upserts: []upsertItem{{id: "fuzz-new", vec: vec, slot: slots.Of("fuzz-new")}}}); err != nil {
			t.Fatalf("write after Replace: %v", err)
		}
		want := contents(s)
		if err := s.Snapshot(); err != nil {
			t.Fatalf("snapshot after Replace: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if s, err = OpenStore(testStoreConfig(dir)); err != nil {
			t.Fatalf("restart after Replace: %v", err)
		}
		if got := contents(s); !reflect.DeepEqual(got, want) {
			t.Fatalf("restart changed the state:\n got %v\nwant %v", strings.Join(keys(got), ","), strings.Join(keys(want), ","))
		}
	})
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// FuzzReplicationStream: a replica reads its primary's WAL stream with readFrame. Any
// bytes give frames then an error, never a panic or an allocation beyond a WAL record;
// every record returned passed its checksum, what the primary's frameWriter writes of
// those frames reads back the same, and a cut stream gives only frames before the cut.
func FuzzReplicationStream(f *testing.F) {
	upsert := encodeUpsert(testDim, []upsertItem{{id: "a", vec: make([]float32, testDim), slot: slots.Of("a")}})
	f.Add(encodeFrames(f, []frame{{1, upsert}, {1, nil}, {2, []byte{}}, {7, upsert}}), 40)
	f.Add(encodeFrames(f, []frame{{^uint64(0), nil}}), 3)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		frames := decodeFrames(t, data)
		again := encodeFrames(t, frames)
		if got := decodeFrames(t, again); !reflect.DeepEqual(got, frames) {
			t.Fatalf("round trip: %v, want %v", got, frames)
		}
		cut = min(max(cut, 0), len(again))
		if got := decodeFrames(t, again[:cut]); len(got) > len(frames) || !reflect.DeepEqual(got, frames[:len(got)]) {
			t.Fatalf("the stream cut at %d gave %v, the whole one %v", cut, got, frames)
		}
	})
}

type frame struct {
	seq  uint64
	data []byte // nil: a heartbeat
}

// encodeFrames writes frames as a primary streams them.
func encodeFrames(tb testing.TB, frames []frame) []byte {
	rec := httptest.NewRecorder()
	fw := newFrameWriter(rec)
	for _, fr := range frames {
		if err := fw.write(fr.seq, fr.data, true); err != nil {
			tb.Fatal(err)
		}
	}
	return rec.Body.Bytes()
}

// decodeFrames reads frames as a replica does, up to the first error.
func decodeFrames(t *testing.T, data []byte) []frame {
	out := []frame{}
	br := bufio.NewReader(bytes.NewReader(data))
	var head [frameHeader]byte
	for {
		seq, rec, err := readFrame(br, &head)
		if err != nil {
			return out
		}
		if rec != nil && crc32.Checksum(rec, castagnoli) != binary.LittleEndian.Uint32(head[12:]) {
			t.Fatalf("record %d returned with a bad checksum", seq)
		}
		out = append(out, frame{seq, rec})
	}
}
