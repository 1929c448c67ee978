package wal

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzSegment opens a log whose only segment is arbitrary bytes (after a valid
// header when withHeader is set, so the fuzzer reaches the record decoder). Open
// must not panic; it either fails with ErrCorrupt, leaving the file as it was, or
// recovers a prefix of the file holding consecutive records that survive an append
// and a reopen.
func FuzzSegment(f *testing.F) {
	var good []byte
	for i := uint64(1); i <= 5; i++ {
		p := payload(i)
		good = appendFrame(good, i, p, crcOf(p))
	}
	f.Add(good, true)
	f.Add(good[:len(good)-7], true)
	f.Add(append(bytes.Clone(good), make([]byte, 100)...), true)
	f.Add(append(encodeSegHeader(1), good...), false)
	f.Add([]byte{}, true)
	f.Add([]byte{}, false)
	f.Add(make([]byte, 64), true)
	f.Add(appendFrame(nil, 2, []byte("x"), crcOf([]byte("x"))), true)
	f.Fuzz(func(t *testing.T, data []byte, withHeader bool) {
		file := data
		if withHeader {
			file = append(encodeSegHeader(1), data...)
		}
		dir := t.TempDir()
		path := filepath.Join(dir, segName(1))
		if err := os.WriteFile(path, file, 0o644); err != nil {
			t.Fatal(err)
		}
		opts := Options{noSync: true}
		l, err := Open(dir, opts)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open failed without ErrCorrupt: %v", err)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, file) {
				t.Fatal("a failed Open changed the segment")
			}
			return
		}
		after, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(file, after) {
			t.Fatal("recovery left something other than a prefix of the segment")
		}
		var recs []Record
		if err := l.Read(1, func(r Record) error { recs = append(recs, r); return nil }); err != nil {
			t.Fatalf("Read after recovery: %v", err)
		}
		if uint64(len(recs)) != l.LastSeq() {
			t.Fatalf("%d records, LastSeq %d", len(recs), l.LastSeq())
		}
		if _, err := l.Append(context.Background(), []byte("after")); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l, err = Open(dir, opts)
		if err != nil {
			t.Fatalf("reopen after recovery and append: %v", err)
		}
		defer l.Close()
		var again []Record
		if err := l.Read(1, func(r Record) error { again = append(again, r); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(again) != len(recs)+1 || string(again[len(recs)].Data) != "after" {
			t.Fatalf("reopen: %d records, want %d + the appended one", len(again), len(recs))
		}
		for i, r := range recs {
			if r.Seq != uint64(i+1) || !bytes.Equal(again[i].Data, r.Data) {
				t.Fatalf("record %d changed across reopen", i)
			}
		}
	})
}

// FuzzSnapshotFile: LoadSnapshot never panics on a snapshot file of arbitrary bytes, or
// of an arbitrary payload under a valid trailer (to reach the payload checksum), and a
// file it accepts yields exactly the payload the trailer vouches for.
func FuzzSnapshotFile(f *testing.F) {
	f.Add([]byte("payload"), true)
	f.Add([]byte{}, true)
	f.Add([]byte{}, false)
	f.Add(append([]byte("payload"), encodeSnapTrailer(7, 7, crcOf([]byte("payload")))...), false)
	f.Add(append([]byte("payload"), encodeSnapTrailer(8, 7, crcOf([]byte("payload")))...), false)
	f.Fuzz(func(t *testing.T, data []byte, withTrailer bool) {
		file := data
		if withTrailer {
			file = append(bytes.Clone(data), encodeSnapTrailer(7, uint64(len(data)), crcOf(data))...)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, snapName(7)), file, 0o644); err != nil {
			t.Fatal(err)
		}
		var got []byte
		seq, err := LoadSnapshot(dir, func(seq uint64, r io.Reader) error {
			var err error
			got, err = io.ReadAll(r)
			return err
		})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("refused without ErrCorrupt: %v", err)
			}
			if withTrailer {
				t.Fatalf("refused a well-formed snapshot: %v", err)
			}
			return
		}
		if seq != 7 || len(file) < snapTrailerSize || !bytes.Equal(got, file[:len(file)-snapTrailerSize]) {
			t.Fatalf("accepted seq %d with payload %q from file %q", seq, got, file)
		}
	})
}
