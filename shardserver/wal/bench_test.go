package wal

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// appendLoad appends n records of size bytes from g goroutines and returns how
// long it took and the fsyncs it cost.
func appendLoad(b *testing.B, mode SyncMode, g, n, size int) (time.Duration, uint64) {
	l := openT(b, b.TempDir(), Options{Sync: mode})
	defer l.Close()
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
	return time.Since(start), l.Stats().Syncs
}

// BenchmarkAppend measures acknowledged appends of 512-byte records (a 128-d
// vector) per second, and fsyncs per append: under SyncAlways group commit should
// bring the latter well below 1 with 16 goroutines.
func BenchmarkAppend(b *testing.B) {
	for _, mode := range []SyncMode{SyncAlways, SyncInterval} {
		for _, g := range []int{1, 16} {
			b.Run(fmt.Sprintf("sync=%v/goroutines=%d", mode, g), func(b *testing.B) {
				b.SetBytes(512)
				elapsed, syncs := appendLoad(b, mode, g, b.N, 512)
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
				b.ReportMetric(float64(syncs)/float64(b.N), "fsyncs/append")
			})
		}
	}
}

// BenchmarkGroupCommit runs the same SyncAlways load with 1 and with 16 goroutines
// in one run and reports the throughput ratio, which timing noise on a shared
// machine affects far less than either figure.
func BenchmarkGroupCommit(b *testing.B) {
	one, _ := appendLoad(b, SyncAlways, 1, b.N, 512)
	many, syncs := appendLoad(b, SyncAlways, 16, b.N, 512)
	b.ReportMetric(one.Seconds()/many.Seconds(), "speedup-16-vs-1")
	b.ReportMetric(float64(syncs)/float64(b.N), "fsyncs/append@16")
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
