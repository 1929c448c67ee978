package benchkit

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestClusteredIsReproducible(t *testing.T) {
	a := Clustered(rand.New(rand.NewPCG(1, 7)), 50, 4)
	b := Clustered(rand.New(rand.NewPCG(1, 7)), 50, 4)
	c := Clustered(rand.New(rand.NewPCG(2, 7)), 50, 4)
	if len(a) != 50 || len(a[0]) != 4 {
		t.Fatalf("shape %d x %d", len(a), len(a[0]))
	}
	same := func(x, y [][]float32) bool {
		for i := range x {
			for j := range x[i] {
				if x[i][j] != y[i][j] {
					return false
				}
			}
		}
		return true
	}
	if !same(a, b) {
		t.Error("same seed gave different vectors")
	}
	if same(a, c) {
		t.Error("different seeds gave the same vectors")
	}
}

func TestPercentiles(t *testing.T) {
	if _, _, ok := Percentiles(nil); ok {
		t.Error("empty: ok")
	}
	var xs []time.Duration
	for i := 200; i >= 1; i-- { // unsorted on purpose
		xs = append(xs, time.Duration(i)*time.Millisecond)
	}
	// floor(199*50/100) = 99 -> 100 ms; floor(199*99/100) = 197 -> 198 ms.
	p50, p99, ok := Percentiles(xs)
	if !ok || p50 != 100 || p99 != 198 {
		t.Errorf("got %v %v %v, want 100 198 true", p50, p99, ok)
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and a ')' in it; utime 250, stime 50 ticks.
	line := "1234 (a b) c) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil || got != 3 {
		t.Errorf("got %v, %v; want 3", got, err)
	}
	for _, bad := range []string{"no paren", "1 (x) S 1 2", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u 5"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestProcessCPUOfSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	got, err := ProcessCPU(os.Getpid())
	if err != nil || got < 0 {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := ProcessCPU(-1); err == nil {
		t.Error("pid -1: no error")
	}
}

func TestLoadAvg(t *testing.T) {
	if _, err := os.Stat("/proc/loadavg"); err != nil {
		t.Skip("no /proc")
	}
	if f := strings.Fields(LoadAvg()); len(f) != 3 {
		t.Errorf("LoadAvg %q", LoadAvg())
	}
	if l1, l5 := LoadAverage(); l1 < 0 || l5 < 0 {
		t.Errorf("LoadAverage %v %v", l1, l5)
	}
}

func TestClosedLoopCallsEveryIndexOnceAndStopsOnError(t *testing.T) {
	var mu sync.Mutex
	seen := map[int]int{}
	lats, err := ClosedLoop(3, 30*time.Millisecond, func() func(int) error {
		return func(i int) error {
			mu.Lock()
			seen[i]++
			mu.Unlock()
			time.Sleep(time.Millisecond)
			return nil
		}
	})
	if err != nil || len(lats) == 0 || len(lats) != len(seen) {
		t.Fatalf("%d latencies, %d indexes, %v", len(lats), len(seen), err)
	}
	// Client g takes g, g+3, g+6, ...: no index is called twice.
	for i, n := range seen {
		if n != 1 {
			t.Errorf("index %d called %d times", i, n)
		}
	}
	boom := errors.New("boom")
	if _, err := ClosedLoop(2, time.Minute, func() func(int) error {
		return func(i int) error {
			if i == 5 {
				return boom
			}
			return nil
		}
	}); !errors.Is(err, boom) {
		t.Fatalf("error %v, want boom (and no minute-long run)", err)
	}
}

func TestSearchHTTP(t *testing.T) {
	var calls atomic.Int64
	fail := atomic.Bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || len(body) == 0 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		calls.Add(1)
		if fail.Load() {
			http.Error(w, "no such index", http.StatusNotFound)
			return
		}
		_, _ = w.Write([]byte(`{"results":[]}`))
	}))
	defer srv.Close()
	bodies := [][]byte{[]byte(`{"q":1}`), []byte(`{"q":2}`)}
	lats, err := SearchHTTP(context.Background(), srv.URL, bodies, 2, 30*time.Millisecond)
	if err != nil || len(lats) == 0 || int64(len(lats)) != calls.Load() {
		t.Fatalf("%d latencies, %d calls, %v", len(lats), calls.Load(), err)
	}
	fail.Store(true)
	if _, err := SearchHTTP(context.Background(), srv.URL, bodies, 2, time.Minute); err == nil || !strings.Contains(err.Error(), "HTTP 404: no such index") {
		t.Fatalf("error %v, want the HTTP status and body", err)
	}
}
