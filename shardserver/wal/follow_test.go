package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// TestFollow runs several followers, from different seqs, while appenders write
// across segment rotations; each must see exactly the records from its seq on, in
// order, and stop when its ctx is canceled.
func TestFollow(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SegmentBytes: 4000})
	defer l.Close()
	appendN(t, l, 1, 30)
	const total = 430 // 30 + 4 appenders x 100
	froms := []uint64{0, 1, 17, 31, 200, total}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		from uint64
		got  []Record
		err  error
	}
	results := make(chan result, len(froms))
	reached := make(chan struct{}, len(froms))
	for _, from := range froms {
		go func() {
			var got []Record
			err := l.Follow(ctx, from, func(r Record) error {
				got = append(got, r)
				if r.Seq == total {
					reached <- struct{}{}
				}
				return nil
			})
			results <- result{from, got, err}
		}()
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for range (total - 30) / 4 {
				if _, err := l.Append(context.Background(), nil); err != nil {
					t.Errorf("appender %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for range froms {
		select {
		case <-reached:
		case <-time.After(10 * time.Second):
			t.Fatal("followers did not reach the last record within 10s")
		}
	}
	cancel()
	for range froms {
		r := <-results
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("Follow(%d) returned %v, want context.Canceled", r.from, r.err)
		}
		first := max(r.from, 1)
		if len(r.got) != int(total-first+1) {
			t.Errorf("Follow(%d): %d records, want %d", r.from, len(r.got), total-first+1)
			continue
		}
		for i, rec := range r.got {
			if rec.Seq != first+uint64(i) {
				t.Errorf("Follow(%d): record %d has seq %d", r.from, i, rec.Seq)
				break
			}
			if rec.Seq <= 30 && !bytes.Equal(rec.Data, payload(rec.Seq)) {
				t.Errorf("Follow(%d): seq %d has the wrong data", r.from, rec.Seq)
				break
			}
		}
	}
}

// TestFollowEnds covers the ways a follower ends other than its ctx.
func TestFollowEnds(t *testing.T) {
	errStop := errors.New("stop")
	for _, tc := range []struct {
		name   string
		fn     func(Record) error
		action func(t *testing.T, l *Log) // run once the follower has caught up
		want   error
	}{
		{"fn error", func(r Record) error {
			if r.Seq == 7 {
				return errStop
			}
			return nil
		}, func(t *testing.T, l *Log) { appendN(t, l, 6, 8) }, errStop},
		{"close", func(Record) error { return nil }, func(t *testing.T, l *Log) { l.Close() }, ErrClosed},
		{"reset ahead", func(Record) error { return nil }, func(t *testing.T, l *Log) {
			if err := l.Reset(50); err != nil {
				t.Error(err)
			}
		}, ErrTrimmed},
		{"reset behind", func(Record) error { return nil }, func(t *testing.T, l *Log) {
			if err := l.Reset(2); err != nil {
				t.Error(err)
			}
		}, ErrTrimmed},
		{"deadline", func(Record) error { return nil }, func(t *testing.T, l *Log) {}, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := openT(t, t.TempDir(), Options{})
			defer l.Close()
			appendN(t, l, 1, 5)
			timeout := 10 * time.Second
			if errors.Is(tc.want, context.DeadlineExceeded) {
				timeout = 200 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			caught := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				done <- l.Follow(ctx, 1, func(r Record) error {
					if r.Seq == 5 {
						close(caught)
					}
					return tc.fn(r)
				})
			}()
			<-caught
			tc.action(t, l)
			if err := <-done; !errors.Is(err, tc.want) {
				t.Fatalf("Follow returned %v, want %v", err, tc.want)
			}
		})
	}
}

// TestFollowTrimmed: a follower reading a segment that TrimBefore removes finishes
// it from its open descriptor; one that starts below FirstSeq gets ErrTrimmed.
func TestFollowTrimmed(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SegmentBytes: 2000})
	defer l.Close()
	appendN(t, l, 1, 100)
	var got []uint64
	err := l.Read(1, func(r Record) error {
		if r.Seq == 2 {
			if err := l.TrimBefore(90); err != nil {
				return err
			}
		}
		got = append(got, r.Seq)
		return nil
	})
	if !errors.Is(err, ErrTrimmed) {
		t.Fatalf("Read across a trim: %v, want ErrTrimmed once the removed segments end", err)
	}
	for i, seq := range got {
		if seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, seq)
		}
	}
	if len(got) < 2 {
		t.Fatalf("read %d records before the trim took effect", len(got))
	}
	first := l.FirstSeq()
	if first <= 1 {
		t.Fatalf("FirstSeq %d after TrimBefore(90)", first)
	}
	err = l.Follow(context.Background(), first-1, func(Record) error { return nil })
	if !errors.Is(err, ErrTrimmed) {
		t.Fatalf("Follow below FirstSeq: %v", err)
	}
}

// TestFollowersDoNotBlockAppends: a follower stuck inside fn does not stop appends.
func TestFollowersDoNotBlockAppends(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	defer l.Close()
	release := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 8)
	for range 8 {
		go func() {
			done <- l.Follow(ctx, 1, func(Record) error { <-release; return nil })
		}()
	}
	appendN(t, l, 1, 200)
	close(release)
	cancel()
	for range 8 {
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
}

func ExampleLog_Follow() {
	dir, _ := os.MkdirTemp("", "wal-example")
	defer os.RemoveAll(dir)
	l, _ := Open(dir, Options{})
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for _, s := range []string{"a", "b", "c"} {
			l.Append(ctx, []byte(s))
		}
	}()
	_ = l.Follow(ctx, 1, func(r Record) error {
		fmt.Println(r.Seq, string(r.Data))
		if r.Seq == 3 {
			cancel()
		}
		return nil
	})
	// Output:
	// 1 a
	// 2 b
	// 3 c
}
