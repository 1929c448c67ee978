// Package benchkit holds the pieces the benchmarks under test/bench share: the
// clustered data generator, latency percentiles, CPU-time readers and the load
// average. Each bench keeps its own flags and output; only these helpers are common,
// so that two benches that report the same figure compute it the same way.
package benchkit

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
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
