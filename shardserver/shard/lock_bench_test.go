package shard

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/slots"
	"github.com/annshard/annshard/shardserver/wal"
)

// searchHoldingLock is Store.Search as it was before its walk left Store.mu: the read
// lock held from the start of the graph walk to the end of the key mapping. It is the
// baseline of BenchmarkSearchUnderWrites, nothing else.
func (s *Store) searchHoldingLock(q []float32, k, ef int) ([]client.Hit, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	res, err := s.st.idx.Search(q, k, hnsw.SearchOptions{Ef: ef})
	if err != nil {
		return nil, err
	}
	hits := make([]client.Hit, 0, len(res))
	for _, r := range res {
		if e := s.st.entries[r.Key]; e.live {
			hits = append(hits, client.Hit{ID: e.id, Distance: r.Distance, Partition: s.st.parts[e.part]})
		}
	}
	return hits, nil
}

// benchInt reads a knob of BenchmarkSearchUnderWrites from the environment.
func benchInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkSearchUnderWrites measures search latency while writers upsert: with the
// read lock held over the whole walk (the old Search) and with the walk outside it (the
// current one), in alternating phases of one run so that both see the same machine.
// A writer asks for Store.mu on every batch; under the old locking it waits for every
// walk in flight, and every search that starts meanwhile waits behind it. It reports
// each mode's search p50/p99 and write batches per second, and the p99 ratio old/new.
//
// make bench-search-lock; knobs: SEARCHLOCK_N (vectors, default 20000), SEARCHLOCK_DIM
// (128), SEARCHLOCK_SEARCHERS (4), SEARCHLOCK_WRITERS (2), SEARCHLOCK_PHASES (10, half per
// mode), SEARCHLOCK_PHASE_MS (500), SEARCHLOCK_WRITE_RATE (batches per second per writer;
// 0, the default, is as fast as each can: the modes then differ in write work too, and on
// few cores the one that lets writers through leaves its searches less CPU; a rate both
// reach compares the locking alone).
func BenchmarkSearchUnderWrites(b *testing.B) {
	n, dim := benchInt("SEARCHLOCK_N", 20000), benchInt("SEARCHLOCK_DIM", 128)
	searchers, writers := benchInt("SEARCHLOCK_SEARCHERS", 4), benchInt("SEARCHLOCK_WRITERS", 2)
	phases, phase := benchInt("SEARCHLOCK_PHASES", 10), time.Duration(benchInt("SEARCHLOCK_PHASE_MS", 500))*time.Millisecond
	var writeEvery time.Duration
	if rate := benchInt("SEARCHLOCK_WRITE_RATE", 0); rate > 0 {
		writeEvery = time.Second / time.Duration(rate)
	}
	const k, ef, batch = 10, 256, 5
	s, err := OpenStore(StoreConfig{DataDir: b.TempDir(), Index: hnsw.Config{Dim: dim, M: 16, EfConstruction: 100, Seed: 1},
		WAL: wal.Options{Sync: wal.SyncInterval, SyncInterval: 50 * time.Millisecond, SegmentBytes: 64 << 20}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	r := newRand(1)
	item := func(i int) upsertItem {
		id := "v" + strconv.Itoa(i)
		return upsertItem{id: id, vec: randVec(r, dim), slot: slots.Of(id)}
	}
	ctx := context.Background()
	for from := 0; from < n; from += 1000 {
		items := make([]upsertItem, 0, 1000)
		for i := from; i < min(from+1000, n); i++ {
			items = append(items, item(i))
		}
		if _, _, err := s.Write(ctx, record{op: opUpsert, upserts: items}); err != nil {
			b.Fatal(err)
		}
	}
	queries := make([][]float32, 256)
	for i := range queries {
		queries[i] = randVec(r, dim)
	}
	type mode struct {
		name   string
		search func(q []float32) error
		lat    []time.Duration
		writes int
		busy   time.Duration
	}
	modes := []*mode{
		{name: "lock held over the walk (before)", search: func(q []float32) error { _, err := s.searchHoldingLock(q, k, ef); return err }},
		{name: "walk without the lock (after)", search: func(q []float32) error { _, err := s.Search(q, k, ef, ""); return err }},
	}
	for b.Loop() {
		for _, m := range modes {
			m.lat, m.writes, m.busy = m.lat[:0], 0, 0
		}
		for ph := range phases {
			m := modes[ph%2]
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var mu sync.Mutex
			for w := range writers {
				wr := newRand(uint64(100*ph + w))
				wg.Go(func() {
					next := time.Now()
					for {
						if writeEvery > 0 {
							t := time.NewTimer(time.Until(next))
							next = next.Add(writeEvery)
							select {
							case <-stop:
								t.Stop()
								return
							case <-t.C:
							}
						} else {
							select {
							case <-stop:
								return
							default:
							}
						}
						items := make([]upsertItem, batch)
						for i := range items {
							items[i] = item(wr.IntN(n))
						}
						if _, _, err := s.Write(ctx, record{op: opUpsert, upserts: items}); err != nil {
							b.Error(err)
							return
						}
						mu.Lock()
						m.writes++
						mu.Unlock()
					}
				})
			}
			for g := range searchers {
				wg.Go(func() {
					var lat []time.Duration
					for i := g; ; i++ {
						select {
						case <-stop:
							mu.Lock()
							m.lat = append(m.lat, lat...)
							mu.Unlock()
							return
						default:
						}
						start := time.Now()
						if err := m.search(queries[i%len(queries)]); err != nil {
							b.Error(err)
						}
						lat = append(lat, time.Since(start))
					}
				})
			}
			time.Sleep(phase)
			close(stop)
			wg.Wait()
			m.busy += phase
		}
	}
	pct := func(xs []time.Duration, q float64) float64 {
		if len(xs) == 0 {
			return 0
		}
		s := slices.Clone(xs)
		slices.Sort(s)
		return float64(s[int(q*float64(len(s)-1))]) / float64(time.Millisecond)
	}
	var p99 [2]float64
	for i, m := range modes {
		p50 := pct(m.lat, 0.50)
		p99[i] = pct(m.lat, 0.99)
		wps := float64(m.writes) / m.busy.Seconds()
		b.Logf("%-34s searches %7d   p50 %7.3f ms   p99 %7.3f ms   writes %6.0f batches/s", m.name, len(m.lat), p50, p99[i], wps)
		tag := []string{"before", "after"}[i]
		b.ReportMetric(p99[i], "p99-ms-"+tag)
		b.ReportMetric(p50, "p50-ms-"+tag)
		b.ReportMetric(wps, "writes/s-"+tag)
	}
	if p99[1] > 0 {
		b.ReportMetric(p99[0]/p99[1], "p99-before/after")
		b.Logf("search p99 under writes, before / after: %.2fx (%d vectors of dimension %d, %d searchers at ef %d, %d writers of %d-vector batches)",
			p99[0]/p99[1], n, dim, searchers, ef, writers, batch)
	}
	b.ReportMetric(0, "ns/op")
}
