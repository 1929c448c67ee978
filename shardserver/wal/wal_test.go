package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// payload is the deterministic data of the i-th record of a test: its length
// varies (empty included) so frames cross buffer and segment boundaries unevenly.
func payload(i uint64) []byte {
	r := rand.New(rand.NewPCG(i, 7))
	b := make([]byte, r.IntN(300))
	for j := range b {
		b[j] = byte(r.Uint32())
	}
	return b
}

func openT(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func appendN(t testing.TB, l *Log, from, to uint64) {
	t.Helper()
	for i := from; i <= to; i++ {
		seq, err := l.Append(context.Background(), payload(i))
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		if seq != i {
			t.Fatalf("Append returned seq %d, want %d", seq, i)
		}
	}
}

// readAll returns the records Read delivers from from.
func readAll(t testing.TB, l *Log, from uint64) []Record {
	t.Helper()
	var recs []Record
	if err := l.Read(from, func(r Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatalf("Read(%d): %v", from, err)
	}
	return recs
}

// checkRange fails unless recs are exactly the records from..to of payload.
func checkRange(t testing.TB, recs []Record, from, to uint64) {
	t.Helper()
	if want := int(to + 1 - from); len(recs) != want {
		t.Fatalf("got %d records, want %d (seq %d..%d)", len(recs), want, from, to)
	}
	for i, r := range recs {
		seq := from + uint64(i)
		if r.Seq != seq || !bytes.Equal(r.Data, payload(seq)) {
			t.Fatalf("record %d: seq %d with %d bytes, want seq %d with %d bytes", i, r.Seq, len(r.Data), seq, len(payload(seq)))
		}
	}
}

func TestParseSyncMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want SyncMode
		ok   bool
	}{
		{"Always", SyncAlways, true},
		{"always", SyncAlways, true},
		{"Interval", SyncInterval, true},
		{"interval", SyncInterval, true},
		{"", 0, false},
		{"sometimes", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSyncMode(tc.in)
			if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
				t.Fatalf("ParseSyncMode(%q) = %v, %v", tc.in, got, err)
			}
			if tc.ok && got.String() != map[SyncMode]string{SyncAlways: "Always", SyncInterval: "Interval"}[got] {
				t.Fatalf("String() = %q", got.String())
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"always", Options{Sync: SyncAlways}},
		{"interval", Options{Sync: SyncInterval, SyncInterval: 5 * time.Millisecond}},
		{"small segments", Options{Sync: SyncAlways, SegmentBytes: 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openT(t, dir, tc.opts)
			if l.LastSeq() != 0 || l.FirstSeq() != 0 {
				t.Fatalf("empty log: LastSeq %d FirstSeq %d", l.LastSeq(), l.FirstSeq())
			}
			checkRange(t, readAll(t, l, 0), 1, 0)
			appendN(t, l, 1, 50)
			if l.LastSeq() != 50 || l.FirstSeq() != 1 {
				t.Fatalf("LastSeq %d FirstSeq %d, want 50 and 1", l.LastSeq(), l.FirstSeq())
			}
			checkRange(t, readAll(t, l, 0), 1, 50)
			checkRange(t, readAll(t, l, 20), 20, 50)
			checkRange(t, readAll(t, l, 51), 51, 50)
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			size := l.SizeBytes()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openT(t, dir, tc.opts)
			defer l.Close()
			if l.LastSeq() != 50 || l.SizeBytes() != size {
				t.Fatalf("reopened: LastSeq %d size %d, want 50 and %d", l.LastSeq(), l.SizeBytes(), size)
			}
			appendN(t, l, 51, 60)
			checkRange(t, readAll(t, l, 1), 1, 60)
		})
	}
}

func TestClosed(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	appendN(t, l, 1, 3)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	checks := map[string]error{
		"Close":      l.Close(),
		"Sync":       l.Sync(),
		"TrimBefore": l.TrimBefore(2),
		"Reset":      l.Reset(9),
		"Read":       l.Read(1, func(Record) error { return nil }),
		"Follow":     l.Follow(ctx, 1, func(Record) error { return nil }),
		"AppendAt":   l.AppendAt(ctx, 4, nil),
	}
	_, checks["Append"] = l.Append(ctx, nil)
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func TestAppendErrors(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Append(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with canceled ctx: %v", err)
	}
	if _, err := l.Append(context.Background(), make([]byte, MaxRecordBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append of MaxRecordBytes+1: %v", err)
	}
	if l.LastSeq() != 0 {
		t.Fatalf("failed appends moved LastSeq to %d", l.LastSeq())
	}
}

func TestAppendAt(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	defer l.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		seq uint64
		ok  bool
	}{
		{0, false}, {2, false}, {1, true}, {1, false}, {3, false}, {2, true}, {3, true}, {10, false},
	} {
		t.Run(fmt.Sprint(tc.seq), func(t *testing.T) {
			err := l.AppendAt(ctx, tc.seq, payload(tc.seq))
			if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrSeqGap)) {
				t.Fatalf("AppendAt(%d) = %v, want ok=%v or ErrSeqGap", tc.seq, err, tc.ok)
			}
		})
	}
	checkRange(t, readAll(t, l, 1), 1, 3)
	if seq, err := l.Append(ctx, payload(4)); err != nil || seq != 4 {
		t.Fatalf("Append after AppendAt: %d, %v", seq, err)
	}
}

func TestRotationAndTrim(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 2000}
	l := openT(t, dir, opts)
	appendN(t, l, 1, 200)
	firsts, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(firsts) < 5 {
		t.Fatalf("%d segments for ~30 KiB at 2000 bytes each", len(firsts))
	}
	for i := 1; i < len(firsts); i++ {
		if firsts[i] <= firsts[i-1] {
			t.Fatalf("segment firsts not ascending: %v", firsts)
		}
	}
	sizeBefore := l.SizeBytes()

	for _, tc := range []struct {
		trim      uint64
		wantFirst uint64 // FirstSeq after trimming
	}{
		{0, 1},
		{1, 1},
		{firsts[1] - 1, 1},     // the first segment still holds firsts[1]-1
		{firsts[1], firsts[1]}, // now it is all below
		{firsts[3] + 1, firsts[3]},
		{1000, firsts[len(firsts)-1]}, // never the active segment
	} {
		t.Run(fmt.Sprint(tc.trim), func(t *testing.T) {
			if err := l.TrimBefore(tc.trim); err != nil {
				t.Fatal(err)
			}
			if got := l.FirstSeq(); got != tc.wantFirst {
				t.Fatalf("FirstSeq %d, want %d", got, tc.wantFirst)
			}
			checkRange(t, readAll(t, l, tc.wantFirst), tc.wantFirst, 200)
			if tc.wantFirst > 1 {
				err := l.Read(tc.wantFirst-1, func(Record) error { return nil })
				if !errors.Is(err, ErrTrimmed) {
					t.Fatalf("Read before FirstSeq: %v, want ErrTrimmed", err)
				}
			}
		})
	}
	if l.SizeBytes() >= sizeBefore {
		t.Fatalf("SizeBytes %d not below %d after trimming", l.SizeBytes(), sizeBefore)
	}
	first := l.FirstSeq()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openT(t, dir, opts)
	defer l.Close()
	if l.FirstSeq() != first || l.LastSeq() != 200 {
		t.Fatalf("reopened trimmed log: FirstSeq %d LastSeq %d, want %d and 200", l.FirstSeq(), l.LastSeq(), first)
	}
	checkRange(t, readAll(t, l, first), first, 200)
}

func TestReset(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentBytes: 1000})
	appendN(t, l, 1, 40)
	if err := l.Reset(100); err != nil {
		t.Fatal(err)
	}
	if l.LastSeq() != 100 || l.FirstSeq() != 0 {
		t.Fatalf("after Reset(100): LastSeq %d FirstSeq %d", l.LastSeq(), l.FirstSeq())
	}
	if err := l.Read(50, func(Record) error { return nil }); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("Read of dropped records: %v, want ErrTrimmed", err)
	}
	checkRange(t, readAll(t, l, 101), 101, 100)
	if err := l.AppendAt(context.Background(), 100, nil); !errors.Is(err, ErrSeqGap) {
		t.Fatalf("AppendAt(100) after Reset(100): %v", err)
	}
	appendN(t, l, 101, 120)
	checkRange(t, readAll(t, l, 101), 101, 120)
	if l.FirstSeq() != 101 {
		t.Fatalf("FirstSeq %d, want 101", l.FirstSeq())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openT(t, dir, Options{SegmentBytes: 1000})
	defer l.Close()
	if l.LastSeq() != 120 || l.FirstSeq() != 101 {
		t.Fatalf("reopened: LastSeq %d FirstSeq %d", l.LastSeq(), l.FirstSeq())
	}
	checkRange(t, readAll(t, l, 0+101), 101, 120)
	// Reset back to an earlier point, and to 0, are allowed too.
	for _, seq := range []uint64{7, 0} {
		if err := l.Reset(seq); err != nil {
			t.Fatal(err)
		}
		appendN(t, l, seq+1, seq+3)
		checkRange(t, readAll(t, l, 0+seq+1), seq+1, seq+3)
	}
}

// TestConcurrentAppend checks that concurrent appenders get distinct seqs, that each
// seq holds its appender's data, and that group commit shares fsyncs.
func TestConcurrentAppend(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"always", Options{Sync: SyncAlways, SegmentBytes: 16 << 10}},
		{"interval", Options{Sync: SyncInterval, SyncInterval: time.Millisecond, SegmentBytes: 16 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openT(t, dir, tc.opts)
			const workers, each = 8, 100
			got := make([]map[uint64]string, workers)
			var wg sync.WaitGroup
			for w := range workers {
				got[w] = map[uint64]string{}
				wg.Go(func() {
					for i := range each {
						data := fmt.Sprintf("w%d-i%d", w, i)
						seq, err := l.Append(context.Background(), []byte(data))
						if err != nil {
							t.Errorf("Append: %v", err)
							return
						}
						got[w][seq] = data
					}
				})
			}
			// A concurrent reader must only ever see a gap-free prefix.
			stop := make(chan struct{})
			var rwg sync.WaitGroup
			rwg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					last := l.LastSeq()
					n := uint64(0)
					if err := l.Read(1, func(r Record) error {
						n++
						if r.Seq != n {
							return fmt.Errorf("seq %d at position %d", r.Seq, n)
						}
						return nil
					}); err != nil {
						t.Errorf("concurrent Read: %v", err)
						return
					}
					if n < last {
						t.Errorf("Read delivered %d records, LastSeq was %d before", n, last)
						return
					}
				}
			})
			wg.Wait()
			close(stop)
			rwg.Wait()
			want := map[uint64]string{}
			for _, m := range got {
				for seq, data := range m {
					if _, dup := want[seq]; dup {
						t.Fatalf("seq %d given twice", seq)
					}
					want[seq] = data
				}
			}
			check := func(l *Log) {
				recs := readAll(t, l, 1)
				if len(recs) != workers*each {
					t.Fatalf("%d records, want %d", len(recs), workers*each)
				}
				for i, r := range recs {
					if r.Seq != uint64(i+1) || string(r.Data) != want[r.Seq] {
						t.Fatalf("record %d: seq %d %q, want %q", i, r.Seq, r.Data, want[r.Seq])
					}
				}
			}
			check(l)
			st := l.Stats()
			if st.Appends != workers*each {
				t.Fatalf("Stats.Appends %d", st.Appends)
			}
			if tc.opts.Sync == SyncAlways && st.Syncs != st.Batches {
				t.Fatalf("%d syncs for %d batches", st.Syncs, st.Batches)
			}
			t.Logf("%d appends in %d batches, %d fsyncs", st.Appends, st.Batches, st.Syncs)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openT(t, dir, tc.opts)
			defer l.Close()
			check(l)
		})
	}
}

// TestIntervalSyncs checks that interval mode fsyncs on its timer without appends
// waiting for it.
func TestIntervalSyncs(t *testing.T) {
	l := openT(t, t.TempDir(), Options{Sync: SyncInterval, SyncInterval: time.Millisecond})
	defer l.Close()
	appendN(t, l, 1, 20)
	deadline := time.Now().Add(5 * time.Second)
	for l.Stats().Syncs == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no fsync within 5s in interval mode")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestOpenCleansTemps(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	appendN(t, l, 1, 3)
	l.Close()
	stale := filepath.Join(dir, segName(4)+tmpSuffix)
	if err := os.WriteFile(stale, []byte("half a header"), 0o644); err != nil {
		t.Fatal(err)
	}
	l = openT(t, dir, Options{})
	defer l.Close()
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temp segment still there: %v", err)
	}
	checkRange(t, readAll(t, l, 1), 1, 3)
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open of a directory: %v, want ErrLocked", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openT(t, dir, Options{})
	l.Close()
}

// TestResetInterrupted plants the marker of a Reset that crashed at each step and
// checks that Open finishes it instead of taking what is left for the log.
func TestResetInterrupted(t *testing.T) {
	for _, tc := range []struct {
		name string
		step func(t *testing.T, dir string, paths []string)
	}{
		{"marker written", func(t *testing.T, dir string, paths []string) {}},
		{"some segments removed", func(t *testing.T, dir string, paths []string) {
			if err := os.Remove(paths[0]); err != nil {
				t.Fatal(err)
			}
		}},
		{"new segment created", func(t *testing.T, dir string, paths []string) {
			for _, p := range paths {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := createSegment(dir, 51, durability{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"marker temp only", func(t *testing.T, dir string, paths []string) {
			// The rename never happened: the reset did not start, the log stands.
			if err := os.Rename(filepath.Join(dir, resetName), filepath.Join(dir, resetName+tmpSuffix)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, paths := writeLog(t, 100, 2000)
			if err := createFileAtomic(dir, resetName, encodeResetMarker(50), durability{}); err != nil {
				t.Fatal(err)
			}
			tc.step(t, dir, paths)
			l := openT(t, dir, Options{})
			defer l.Close()
			if tc.name == "marker temp only" {
				checkRange(t, readAll(t, l, 1), 1, 100)
				return
			}
			if l.LastSeq() != 50 || l.FirstSeq() != 0 {
				t.Fatalf("LastSeq %d FirstSeq %d, want 50 and 0", l.LastSeq(), l.FirstSeq())
			}
			if _, err := os.Stat(filepath.Join(dir, resetName)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("reset marker left behind: %v", err)
			}
			appendN(t, l, 51, 53)
			checkRange(t, readAll(t, l, 51), 51, 53)
		})
	}
}

// TestCloseWhileAppending: every append that Close races with either succeeds, and
// is then in the reopened log, or fails with ErrClosed.
func TestCloseWhileAppending(t *testing.T) {
	for _, mode := range []SyncMode{SyncAlways, SyncInterval} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			l := openT(t, dir, Options{Sync: mode, SegmentBytes: 8 << 10})
			var mu sync.Mutex
			ok := map[uint64]string{}
			var wg sync.WaitGroup
			for w := range 6 {
				wg.Go(func() {
					for i := 0; ; i++ {
						data := fmt.Sprintf("w%d-%d", w, i)
						seq, err := l.Append(context.Background(), []byte(data))
						if errors.Is(err, ErrClosed) {
							return
						}
						if err != nil {
							t.Errorf("Append: %v", err)
							return
						}
						mu.Lock()
						ok[seq] = data
						mu.Unlock()
					}
				})
			}
			for l.LastSeq() < 300 {
				time.Sleep(time.Millisecond)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			l = openT(t, dir, Options{})
			defer l.Close()
			recs := readAll(t, l, 1)
			if len(recs) < len(ok) {
				t.Fatalf("%d records after reopen, %d were acknowledged", len(recs), len(ok))
			}
			for _, r := range recs {
				if want, acked := ok[r.Seq]; acked && string(r.Data) != want {
					t.Fatalf("seq %d: %q, acknowledged as %q", r.Seq, r.Data, want)
				}
			}
		})
	}
}
