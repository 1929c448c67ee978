package hnsw

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Benchmarks report what users care about: queries/s and recall@10 per ef at one
// thread, build time, bytes per vector. Data sets:
//
//	20000x128   generated, always
//	60000x784   generated, when HNSW_BENCH_LARGE=1 (the size of the project's
//	            reference run; the build takes about a minute)
//	fvecs       base.fvecs and query.fvecs of the directory HNSW_BENCH_FVECS
//
// e.g. HNSW_BENCH_LARGE=1 go test -run XXX -bench 'Search/60000x784' -benchtime 2000x
type benchSet struct {
	name     string
	data     [][]float32
	queries  [][]float32
	gt       [][]uint32 // true 10 nearest per query
	x        *Index
	build    time.Duration
	buildCPU time.Duration
}

var (
	benchMu   sync.Mutex
	benchSets = map[string]*benchSet{}
)

func benchData(b *testing.B) []*benchSet {
	var sets []*benchSet
	sets = append(sets, loadSet(b, "20000x128", func() ([][]float32, [][]float32) {
		return clusteredLatent(21, 20000, 128, 100, 40, 0.3), clusteredLatent(22, 500, 128, 100, 40, 0.3)
	}))
	if os.Getenv("HNSW_BENCH_LARGE") != "" {
		sets = append(sets, loadSet(b, "60000x784", func() ([][]float32, [][]float32) {
			return clusteredLatent(23, 60000, 784, 100, 48, 0.3), clusteredLatent(24, 500, 784, 100, 48, 0.3)
		}))
	}
	if dir := os.Getenv("HNSW_BENCH_FVECS"); dir != "" {
		sets = append(sets, loadSet(b, "fvecs", func() ([][]float32, [][]float32) {
			return readFvecs(b, filepath.Join(dir, "base.fvecs")), readFvecs(b, filepath.Join(dir, "query.fvecs"))
		}))
	}
	return sets
}

func loadSet(b *testing.B, name string, gen func() ([][]float32, [][]float32)) *benchSet {
	benchMu.Lock()
	defer benchMu.Unlock()
	if s, ok := benchSets[name]; ok {
		return s
	}
	data, queries := gen()
	s := &benchSet{name: name, data: data, queries: queries}
	s.gt = groundTruth(data, queries, 10)
	x, err := New(Config{Dim: len(data[0]), M: 16, EfConstruction: 200, Capacity: len(data)})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	cpu0 := cpuTime()
	for i, v := range data {
		if err := x.Add(uint64(i), v); err != nil {
			b.Fatal(err)
		}
	}
	s.build = time.Since(start)
	s.buildCPU = cpuTime() - cpu0
	s.x = x
	benchSets[name] = s
	return s
}

func groundTruth(data, queries [][]float32, k int) [][]uint32 {
	gt := make([][]uint32, len(queries))
	var wg sync.WaitGroup
	for w := range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var h maxHeap
			for qi := w; qi < len(queries); qi += runtime.GOMAXPROCS(0) {
				h = h[:0]
				for i, v := range data {
					d := l2(queries[qi], v)
					if len(h) < k {
						h.push(pair{d, uint32(i)})
					} else if d < h[0].d {
						h.pop()
						h.push(pair{d, uint32(i)})
					}
				}
				for _, p := range h.drainAscending(nil) {
					gt[qi] = append(gt[qi], p.id)
				}
			}
		}()
	}
	wg.Wait()
	return gt
}

func readFvecs(b *testing.B, path string) [][]float32 {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var out [][]float32
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(f, hdr[:]); err == io.EOF {
			return out
		} else if err != nil {
			b.Fatal(err)
		}
		d := int(binary.LittleEndian.Uint32(hdr[:]))
		buf := make([]byte, 4*d)
		if _, err := io.ReadFull(f, buf); err != nil {
			b.Fatal(err)
		}
		v := make([]float32, d)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
		}
		out = append(out, v)
	}
}

// BenchmarkSearch: one thread, k=10, per ef. Reports queries/s and recall@10.
func BenchmarkSearch(b *testing.B) {
	for _, s := range benchData(b) {
		for _, ef := range []int{10, 14, 20, 32, 40, 64, 128} {
			b.Run(fmt.Sprintf("%s/ef=%d", s.name, ef), func(b *testing.B) {
				dst := make([]Result, 0, 10)
				var hit, total int
				b.ReportAllocs()
				i := 0
				cpu0 := cpuTime()
				for b.Loop() {
					qi := i % len(s.queries)
					i++
					dst, _ = s.x.SearchInto(dst, s.queries[qi], 10, SearchOptions{Ef: ef})
					for _, r := range dst {
						for _, g := range s.gt[qi] {
							if uint64(g) == r.Key {
								hit++
								break
							}
						}
					}
					total += len(s.gt[qi])
				}
				if cpu := cpuTime() - cpu0; cpu > 0 {
					b.ReportMetric(float64(b.N)/cpu.Seconds(), "queries/cpu-s")
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
				b.ReportMetric(float64(hit)/float64(total), "recall@10")
			})
		}
	}
}

// BenchmarkBuild reports the single-threaded build time of each data set (built
// once, shared with BenchmarkSearch) and the memory per vector.
func BenchmarkBuild(b *testing.B) {
	for _, s := range benchData(b) {
		b.Run(s.name, func(b *testing.B) {
			for b.Loop() {
			}
			b.ReportMetric(s.build.Seconds(), "build-s")
			b.ReportMetric(s.buildCPU.Seconds(), "build-cpu-s")
			b.ReportMetric(float64(len(s.data))/s.build.Seconds(), "inserts/s")
			b.ReportMetric(float64(s.x.MemoryBytes())/float64(len(s.data)), "bytes/vector")
			b.ReportMetric(float64(4*len(s.data[0])), "vector-bytes")
		})
	}
}

// BenchmarkBuildThreads builds 20000x128 from 1 and from GOMAXPROCS goroutines in
// one run: Add is safe for concurrent use, and the ratio shows how it scales.
func BenchmarkBuildThreads(b *testing.B) {
	data := clusteredLatent(21, 20000, 128, 100, 40, 0.3)
	for _, p := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("threads=%d", p), func(b *testing.B) {
			cpu0 := cpuTime()
			for b.Loop() {
				x, _ := New(Config{Dim: 128, Capacity: len(data)})
				var wg sync.WaitGroup
				for w := range p {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := w; i < len(data); i += p {
							if err := x.Add(uint64(i), data[i]); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			}
			b.ReportMetric(float64(b.Elapsed().Seconds())/float64(b.N), "build-s")
			// CPU per build: if it stays flat as threads grow, the locks cost nothing
			// and the wall-clock speed-up is bounded only by free cores.
			b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "build-cpu-s")
		})
	}
}

// BenchmarkPrefetch compares the search with and without the prefetching kernels
// on the same index in one run (the ratio is what to read).
func BenchmarkPrefetch(b *testing.B) {
	if !useAVX512 {
		b.Skip("prefetching kernels need AVX-512")
	}
	sets := benchData(b)
	s := sets[len(sets)-1]
	defer func() { usePrefetch = true }()
	for round := range 2 {
		for _, pf := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/prefetch=%v/round=%d", s.name, pf, round), func(b *testing.B) {
				usePrefetch = pf
				dst := make([]Result, 0, 10)
				i := 0
				cpu0 := cpuTime()
				for b.Loop() {
					dst, _ = s.x.SearchInto(dst, s.queries[i%len(s.queries)], 10, SearchOptions{Ef: 32})
					i++
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
				if cpu := cpuTime() - cpu0; cpu > 0 {
					b.ReportMetric(float64(b.N)/cpu.Seconds(), "queries/cpu-s")
				}
			})
		}
	}
}

// TestExportBenchData writes the generated benchmark sets as fvecs into the
// directory HNSW_EXPORT_DIR, so other implementations (hnswlib) can be run on the
// very same data; skipped otherwise.
func TestExportBenchData(t *testing.T) {
	dir := os.Getenv("HNSW_EXPORT_DIR")
	if dir == "" {
		t.Skip("HNSW_EXPORT_DIR not set")
	}
	for name, set := range map[string][2][][]float32{
		"20000x128": {clusteredLatent(21, 20000, 128, 100, 40, 0.3), clusteredLatent(22, 500, 128, 100, 40, 0.3)},
		"60000x784": {clusteredLatent(23, 60000, 784, 100, 48, 0.3), clusteredLatent(24, 500, 784, 100, 48, 0.3)},
	} {
		sub := filepath.Join(dir, name)
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, file := range []string{"base.fvecs", "query.fvecs"} {
			var buf []byte
			for _, v := range set[i] {
				buf = binary.LittleEndian.AppendUint32(buf, uint32(len(v)))
				for _, f := range v {
					buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(f))
				}
			}
			if err := os.WriteFile(filepath.Join(sub, file), buf, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
