// Package benchkit holds the pieces the benchmarks under test/bench share: the
// clustered data generator, the closed loop of searches over HTTP, latency
// percentiles, CPU-time readers and the load average. Each bench keeps its own flags and output; only these helpers are common,
// so that two benches that report the same figure compute it the same way.
package benchkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Clustered returns n vectors of dimension dim around 64 random centres (spread 0.5):
// clusters make a graph search realistic. The same r gives the same vectors.
func Clustered(r *rand.Rand, n, dim int) [][]float32 {
	const clusters = 64
	centers := make([][]float32, clusters)
	for i := range centers {
		centers[i] = make([]float32, dim)
		for j := range centers[i] {
			centers[i][j] = float32(r.NormFloat64())
		}
	}
	out := make([][]float32, n)
	for i := range out {
		c := centers[r.IntN(clusters)]
		v := make([]float32, dim)
		for j := range v {
			v[j] = c[j] + 0.5*float32(r.NormFloat64())
		}
		out[i] = v
	}
	return out
}

// HTTPClient is a client keeping up to conns idle connections to each host, so that
// conns clients searching back to back reuse their connections.
func HTTPClient(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = max(conns, 100)
	tr.MaxIdleConnsPerHost = conns
	return &http.Client{Transport: tr}
}

// ClosedLoop runs c clients back to back for d: client g calls one(i) for i = g, g+c,
// g+2c, ... and the latency of each call is returned. The first error stops every
// client and is returned.
func ClosedLoop(c int, d time.Duration, client func() func(i int) error) ([]time.Duration, error) {
	lats := make([][]time.Duration, c)
	var failed atomic.Value
	stopAt := time.Now().Add(d)
	var wg sync.WaitGroup
	for g := range c {
		one := client()
		wg.Go(func() {
			for i := g; time.Now().Before(stopAt) && failed.Load() == nil; i += c {
				t0 := time.Now()
				if err := one(i); err != nil {
					failed.Store(err)
					return
				}
				lats[g] = append(lats[g], time.Since(t0))
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return nil, err
	}
	return slices.Concat(lats...), nil
}

// SearchHTTP POSTs the pre-encoded searches from c clients back to back for d. Any
// failed search fails the run.
func SearchHTTP(ctx context.Context, url string, bodies [][]byte, c int, d time.Duration) ([]time.Duration, error) {
	hc := HTTPClient(c)
	defer hc.CloseIdleConnections()
	return ClosedLoop(c, d, func() func(int) error {
		return func(i int) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(bodies[i%len(bodies)]))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("search: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
			}
			return nil
		}
	})
}

// Percentiles sorts xs in place and returns its 50th and 99th percentiles in
// milliseconds, each the element at index floor((len-1)*p/100); ok is false (and
// both 0) when xs is empty.
func Percentiles(xs []time.Duration) (p50, p99 float64, ok bool) {
	if len(xs) == 0 {
		return 0, 0, false
	}
	slices.Sort(xs)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return ms(xs[(len(xs)-1)*50/100]), ms(xs[(len(xs)-1)*99/100]), true
}

// SelfCPU is the user and system CPU seconds this process has used.
func SelfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux
// architecture Go runs on.
const clockTicks = 100

// ProcessCPU is the user and system CPU seconds process pid has used, from
// /proc/<pid>/stat.
func ProcessCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("CPU time of process %d: %w", pid, err)
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a /proc/<pid>/stat line.
func parseStatCPU(b []byte) (float64, error) {
	// The command name (field 2) may hold spaces: count fields after its closing ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc/<pid>/stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc/<pid>/stat format")
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/<pid>/stat: %w", err)
	}
	return float64(utime+stime) / clockTicks, nil
}

// LoadAverage is the 1- and 5-minute load averages (0, 0 where /proc is missing).
func LoadAverage() (l1, l5 float64) {
	f := loadFields()
	if len(f) < 2 {
		return 0, 0
	}
	l1, _ = strconv.ParseFloat(f[0], 64)
	l5, _ = strconv.ParseFloat(f[1], 64)
	return l1, l5
}

// LoadAvg is the 1, 5 and 15 minute load averages as uptime prints them ("?" where
// /proc is missing).
func LoadAvg() string {
	f := loadFields()
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func loadFields() []string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}
