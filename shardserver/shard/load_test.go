package shard

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestLoadRates(t *testing.T) {
	base := time.Unix(1_000_000, 0)
	tests := []struct {
		name      string
		perSecond []int // queries in consecutive seconds starting at base
		at        time.Duration
		want1     float64
		want10    float64
	}{
		{"idle", nil, 5 * time.Second, 0, 0},
		{"steady", []int{10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10}, 11 * time.Second, 10, 10},
		{"current second not counted", []int{0, 0, 50}, 2*time.Second + 500*time.Millisecond, 0, 0},
		{"burst then quiet", []int{100}, 3 * time.Second, 0, 10},
		{"older than the window", []int{100}, 12 * time.Second, 0, 0},
		{"ring reuse", []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}, 13 * time.Second, 13, 8.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var lt loadTracker
			for sec, n := range tt.perSecond {
				for range n {
					lt.observe(base.Add(time.Duration(sec)*time.Second), time.Millisecond)
				}
			}
			q1, q10 := lt.rates(base.Add(tt.at))
			if q1 != tt.want1 || q10 != tt.want10 {
				t.Fatalf("rates = %v, %v; want %v, %v", q1, q10, tt.want1, tt.want10)
			}
		})
	}
}

func TestLoadPercentiles(t *testing.T) {
	var lt loadTracker
	if p50, p99 := lt.percentiles(); p50 != 0 || p99 != 0 {
		t.Fatalf("empty percentiles = %v, %v", p50, p99)
	}
	now := time.Unix(1, 0)
	for i := 1; i <= 100; i++ {
		lt.observe(now, time.Duration(i)*time.Millisecond)
	}
	if p50, p99 := lt.percentiles(); p50 != 50 || p99 != 99 {
		t.Fatalf("percentiles = %v, %v; want 50, 99", p50, p99)
	}
	// The window keeps only the latest samples: old slow ones age out.
	for range latSamples {
		lt.observe(now, 2*time.Millisecond)
	}
	if p50, p99 := lt.percentiles(); p50 != 2 || p99 != 2 {
		t.Fatalf("percentiles after the window moved = %v, %v", p50, p99)
	}
	if cpuSeconds() <= 0 {
		t.Fatal("cpuSeconds is not positive")
	}
}

func TestInstrumentCountsStatus(t *testing.T) {
	s, _ := newTestServer(t, testConfig(t.TempDir()))
	h := s.instrument("probe", func(w http.ResponseWriter, r *http.Request) {
		if s.load.inFlight.Load() != 1 {
			t.Error("request not counted in flight")
		}
		w.WriteHeader(http.StatusTeapot)
	})
	h(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	rec := httptest.NewRecorder()
	s.metrics.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !strings.Contains(rec.Body.String(), `annshard_shard_requests_total{code="418",route="probe"} 1`) || s.load.inFlight.Load() != 0 {
		t.Fatalf("metrics lack the probe request:\n%s", rec.Body.String())
	}
}
