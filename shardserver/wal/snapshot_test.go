package wal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// snapPayload is the payload of the test snapshot at seq: large enough to span
// several buffer fills.
func snapPayload(seq uint64) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("snapshot %d;", seq)), int(1000+seq*3000))
}

func writeSnap(t *testing.T, dir string, seq uint64) {
	t.Helper()
	err := WriteSnapshot(dir, seq, func(w io.Writer) error {
		_, err := w.Write(snapPayload(seq))
		return err
	})
	if err != nil {
		t.Fatalf("WriteSnapshot(%d): %v", seq, err)
	}
}

// load returns the seq and payload LoadSnapshot hands over, and how many times it
// called read.
func load(t *testing.T, dir string, fail map[uint64]bool) (uint64, []byte, int, error) {
	t.Helper()
	var got []byte
	calls := 0
	seq, err := LoadSnapshot(dir, func(seq uint64, r io.Reader) error {
		calls++
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if fail[seq] {
			return errors.New("caller refuses it")
		}
		got = b
		return nil
	})
	return seq, got, calls, err
}

func snapFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestSnapshotRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "snaps")
	if seq, _, calls, err := load(t, dir, nil); seq != 0 || calls != 0 || err != nil {
		t.Fatalf("empty dir: seq %d, %d calls, %v", seq, calls, err)
	}
	if p, seq, size, err := LatestSnapshot(dir); p != "" || seq != 0 || size != 0 || err != nil {
		t.Fatalf("LatestSnapshot of empty dir: %q %d %d %v", p, seq, size, err)
	}
	for _, seq := range []uint64{0, 10, 25, 40} {
		writeSnap(t, dir, seq)
	}
	want := []string{snapName(25), snapName(40)}
	if got := snapFiles(t, dir); !slices.Equal(got, want) {
		t.Fatalf("files %v, want only the newest two %v", got, want)
	}
	if seqs, err := Snapshots(dir); err != nil || !slices.Equal(seqs, []uint64{40, 25}) {
		t.Fatalf("Snapshots: %v, %v", seqs, err)
	}
	seq, got, calls, err := load(t, dir, nil)
	if err != nil || seq != 40 || calls != 1 || !bytes.Equal(got, snapPayload(40)) {
		t.Fatalf("LoadSnapshot: seq %d, %d calls, %d bytes, %v", seq, calls, len(got), err)
	}
	p, seq, size, err := LatestSnapshot(dir)
	if err != nil || seq != 40 || size != int64(len(snapPayload(40))) || p != filepath.Join(dir, snapName(40)) {
		t.Fatalf("LatestSnapshot: %q %d %d %v", p, seq, size, err)
	}
	rc, err := OpenSnapshot(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(b, snapPayload(40)) {
		t.Fatalf("OpenSnapshot read %d bytes, %v", len(b), err)
	}
}

// TestSnapshotFallback damages the newest snapshot in each way and expects the
// previous one to load, and OpenSnapshot to refuse the damaged one.
func TestSnapshotFallback(t *testing.T) {
	flip := func(off func(size int64) int64) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[off(int64(len(b)))] ^= 0x20
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		// openFails: OpenSnapshot itself refuses (trailer); otherwise the error
		// comes at the end of the payload.
		openFails bool
	}{
		{"payload byte", flip(func(n int64) int64 { return n / 2 }), false},
		{"first byte", flip(func(int64) int64 { return 0 }), false},
		{"trailer seq", flip(func(n int64) int64 { return n - snapTrailerSize + 8 }), true},
		{"trailer checksum", flip(func(n int64) int64 { return n - 1 }), true},
		{"truncated", func(t *testing.T, path string) {
			st, _ := os.Stat(path)
			if err := os.Truncate(path, st.Size()-100); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"empty", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"another seq's file", func(t *testing.T, path string) {
			b, err := os.ReadFile(filepath.Join(filepath.Dir(path), snapName(20)))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeSnap(t, dir, 20)
			writeSnap(t, dir, 30)
			newest := filepath.Join(dir, snapName(30))
			tc.damage(t, newest)
			seq, got, _, err := load(t, dir, nil)
			if err != nil || seq != 20 || !bytes.Equal(got, snapPayload(20)) {
				t.Fatalf("LoadSnapshot: seq %d, %d bytes, %v; want the older one", seq, len(got), err)
			}
			if _, seq, _, err := LatestSnapshot(dir); err != nil || seq != 20 {
				t.Fatalf("LatestSnapshot: %d, %v; want 20", seq, err)
			}
			rc, err := OpenSnapshot(newest)
			if tc.openFails {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("OpenSnapshot of damaged: %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if _, err := io.ReadAll(rc); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("reading damaged payload: %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestSnapshotReadFailsFallsBack(t *testing.T) {
	dir := t.TempDir()
	writeSnap(t, dir, 1)
	writeSnap(t, dir, 2)
	seq, got, calls, err := load(t, dir, map[uint64]bool{2: true})
	if err != nil || seq != 1 || calls != 2 || !bytes.Equal(got, snapPayload(1)) {
		t.Fatalf("seq %d, %d calls, %v; want seq 1 after 2 calls", seq, calls, err)
	}
	_, _, _, err = load(t, dir, map[uint64]bool{1: true, 2: true})
	if err == nil {
		t.Fatal("LoadSnapshot succeeded though read refused every snapshot")
	}
	// Every snapshot corrupt: an error wrapping ErrCorrupt, and read never called.
	for _, seq := range []uint64{1, 2} {
		if err := os.Truncate(filepath.Join(dir, snapName(seq)), 40); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, calls, err := load(t, dir, nil); !errors.Is(err, ErrCorrupt) || calls != 0 {
		t.Fatalf("all corrupt: %d calls, %v", calls, err)
	}
	if _, _, _, err := LatestSnapshot(dir); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("LatestSnapshot with all corrupt: %v", err)
	}
}

func TestSnapshotTemps(t *testing.T) {
	dir := t.TempDir()
	writeSnap(t, dir, 5)
	// A crashed writer's temp file, newer than any snapshot, is not a snapshot.
	stale := filepath.Join(dir, fmt.Sprintf("snap-%020d.tmp", 9))
	if err := os.WriteFile(stale, []byte("half written"), 0o644); err != nil {
		t.Fatal(err)
	}
	if seq, _, _, err := load(t, dir, nil); err != nil || seq != 5 {
		t.Fatalf("LoadSnapshot with a temp file: %d, %v", seq, err)
	}
	// A failing write leaves no file and keeps the old snapshot.
	werr := errors.New("disk gremlin")
	err := WriteSnapshot(dir, 7, func(w io.Writer) error {
		w.Write([]byte("partial"))
		return werr
	})
	if !errors.Is(err, werr) {
		t.Fatalf("WriteSnapshot: %v, want the write error", err)
	}
	if got := snapFiles(t, dir); !slices.Equal(got, []string{snapName(5), filepath.Base(stale)}) {
		t.Fatalf("files after a failed write: %v", got)
	}
	// The next successful write cleans the stale temp file.
	writeSnap(t, dir, 8)
	if got := snapFiles(t, dir); !slices.Equal(got, []string{snapName(5), snapName(8)}) {
		t.Fatalf("files after a good write: %v", got)
	}
}

// TestSnapshotOlderReplacesNewer: a snapshot written at a lower seq than existing
// ones (a replica re-bootstrapped from a primary that is behind) becomes the one
// loaded; the newer ones were another history.
func TestSnapshotOlderReplacesNewer(t *testing.T) {
	dir := t.TempDir()
	for _, seq := range []uint64{10, 20, 30} {
		writeSnap(t, dir, seq)
	}
	writeSnap(t, dir, 25)
	if seqs, err := Snapshots(dir); err != nil || !slices.Equal(seqs, []uint64{25, 20}) {
		t.Fatalf("Snapshots after writing 25 over 20 and 30: %v, %v", seqs, err)
	}
	if seq, got, _, err := load(t, dir, nil); err != nil || seq != 25 || !bytes.Equal(got, snapPayload(25)) {
		t.Fatalf("LoadSnapshot: %d, %v", seq, err)
	}
	writeSnap(t, dir, 25) // the same seq again replaces it in place
	if seqs, err := Snapshots(dir); err != nil || !slices.Equal(seqs, []uint64{25, 20}) {
		t.Fatalf("Snapshots after rewriting 25: %v, %v", seqs, err)
	}
}
