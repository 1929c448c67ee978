package wal

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// appendLoad appends n records of size bytes to l from g goroutines and returns
// how long it took.
func appendLoad(b *testing.B, l *Log, g, n, size int) time.Duration {
	data := make([]byte, size)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range g {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if _, err := l.Append(context.Background(), data); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// BenchmarkAppend measures acknowledged appends of 512-byte records (a 128-d
// vector) per second, and fsyncs per append: under SyncAlways group commit should
// bring the latter well below 1 with 16 goroutines.
func BenchmarkAppend(b *testing.B) {
	for _, mode := range []SyncMode{SyncAlways, SyncInterval} {
		for _, g := range []int{1, 16} {
			b.Run(fmt.Sprintf("sync=%v/goroutines=%d", mode, g), func(b *testing.B) {
				l := openT(b, b.TempDir(), Options{Sync: mode})
				defer l.Close()
				b.SetBytes(512)
				elapsed := appendLoad(b, l, g, b.N, 512)
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
				b.ReportMetric(float64(l.Stats().Syncs)/float64(b.N), "fsyncs/append")
			})
		}
	}
}

// BenchmarkGroupCommit runs the same SyncAlways load with 1 and with 16 goroutines
// in one run, in alternating slices so that the disk's latency drifting over time
// hits both alike, and reports the throughput ratio.
func BenchmarkGroupCommit(b *testing.B) {
	one := openT(b, b.TempDir(), Options{Sync: SyncAlways})
	defer one.Close()
	many := openT(b, b.TempDir(), Options{Sync: SyncAlways})
	defer many.Close()
	const slices = 10
	var tOne, tMany time.Duration
	for i := range slices {
		n := b.N / slices
		if i < b.N%slices {
			n++
		}
		tOne += appendLoad(b, one, 1, n, 512)
		tMany += appendLoad(b, many, 16, n, 512)
	}
	b.ReportMetric(tOne.Seconds()/tMany.Seconds(), "speedup-16-vs-1")
	b.ReportMetric(float64(many.Stats().Syncs)/float64(many.Stats().Appends), "fsyncs/append@16")
}

// BenchmarkReplay measures Read over a log, what start-up after a snapshot costs.
func BenchmarkReplay(b *testing.B) {
	l := openT(b, b.TempDir(), Options{Sync: SyncInterval, SegmentBytes: 4 << 20})
	defer l.Close()
	data := make([]byte, 512)
	const n = 20000
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range n / 8 {
				if _, err := l.Append(context.Background(), data); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.SetBytes(n * 512)
	b.ResetTimer()
	for b.Loop() {
		count := 0
		if err := l.Read(1, func(Record) error { count++; return nil }); err != nil || count != n {
			b.Fatalf("read %d records: %v", count, err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkFollowerCost appends with 16 followers tailing the log and without, in
// alternating slices, and reports the append throughput ratio (1 means followers
// cost appenders nothing) and the followers' delivered records per second.
func BenchmarkFollowerCost(b *testing.B) {
	alone := openT(b, b.TempDir(), Options{Sync: SyncAlways})
	defer alone.Close()
	followed := openT(b, b.TempDir(), Options{Sync: SyncAlways})
	defer followed.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var delivered atomic.Int64
	var fwg sync.WaitGroup
	for range 16 {
		fwg.Go(func() {
			_ = followed.Follow(ctx, 1, func(Record) error { delivered.Add(1); return nil })
		})
	}
	const slices = 10
	var tAlone, tFollowed time.Duration
	for i := range slices {
		n := b.N / slices
		if i < b.N%slices {
			n++
		}
		tAlone += appendLoad(b, alone, 16, n, 512)
		tFollowed += appendLoad(b, followed, 16, n, 512)
	}
	for delivered.Load() < int64(16*b.N) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	fwg.Wait()
	b.ReportMetric(tAlone.Seconds()/tFollowed.Seconds(), "throughput-followed-vs-alone")
	b.ReportMetric(float64(16*b.N)/tFollowed.Seconds(), "delivered/s")
}
