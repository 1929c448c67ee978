package shard

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/slots"
	"github.com/annshard/annshard/shardserver/wal"
)

// BenchmarkWriteStall measures the latency of writes (upserts of 10 vectors by 4
// writers) while the store does what used to stall them: snapshots written back to
// back ("snapshot"), and a churn of deletes that makes the index vacuum its tombstones
// ("vacuum", every write deletes 10 ids and upserts 10). "idle" is the same writes with
// neither. It reports p50, p99 and the longest write in ms:
//
//	go test ./shardserver/shard -run '^$' -bench WriteStall -benchtime 4000x
//
// It uses only the Store API of before the change, so the same file measures the old
// code too (snapshots and Vacuum held writers for their whole length there).
func BenchmarkWriteStall(b *testing.B) {
	const n, dim, writers = 20000, 32, 4
	for _, mode := range []string{"idle", "snapshot", "vacuum"} {
		b.Run(mode, func(b *testing.B) {
			s, err := OpenStore(StoreConfig{DataDir: b.TempDir(),
				Index: hnsw.Config{Dim: dim, Metric: hnsw.L2, M: 16, EfConstruction: 100, Seed: 1},
				WAL:   wal.Options{Sync: wal.SyncInterval}})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			r := rand.New(rand.NewPCG(1, 2))
			vec := func() []float32 { return randVec(r, dim) }
			item := func(id string, v []float32) upsertItem { return upsertItem{id: id, vec: v, slot: slots.Of(id)} }
			for from := 0; from < n; from += 500 {
				items := make([]upsertItem, 500)
				for i := range items {
					items[i] = item(fmt.Sprint("k", from+i), vec())
				}
				if _, _, err := s.Write(context.Background(), record{op: opUpsert, upserts: items}); err != nil {
					b.Fatal(err)
				}
			}
			stop := make(chan struct{})
			var bg sync.WaitGroup
			if mode == "snapshot" {
				bg.Add(1)
				go func() {
					defer bg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if err := s.Snapshot(); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			// Each writer owns the ids = w mod writers; the vectors are drawn up front.
			var next atomic.Int64
			lat := make([][]time.Duration, writers)
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range writers {
				wr := rand.New(rand.NewPCG(uint64(w), 3))
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						recs := []record{{op: opUpsert}}
						ids := make([]string, 10)
						for i := range ids {
							ids[i] = fmt.Sprint("k", wr.IntN(n/writers)*writers+w)
							recs[0].upserts = append(recs[0].upserts, item(ids[i], randVec(wr, dim)))
						}
						if mode == "vacuum" {
							del := record{op: opDelete}
							for _, id := range ids {
								del.deletes = append(del.deletes, deleteItem{id: id, slot: slots.Of(id)})
							}
							recs = []record{del, recs[0]}
						}
						for _, rec := range recs {
							start := time.Now()
							if _, _, err := s.Write(context.Background(), rec); err != nil {
								b.Error(err)
								return
							}
							lat[w] = append(lat[w], time.Since(start))
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			close(stop)
			bg.Wait()
			all := slices.Concat(lat...)
			slices.Sort(all)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(all[len(all)/2]), "p50-ms")
			b.ReportMetric(ms(all[len(all)*99/100]), "p99-ms")
			b.ReportMetric(ms(all[len(all)-1]), "max-ms")
		})
	}
}
