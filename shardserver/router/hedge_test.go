package router

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/client"
)

func TestLatencyWindow(t *testing.T) {
	for _, tc := range []struct {
		pct     float64
		samples int // latencies 1ms..samples ms, in order
		want    time.Duration
	}{
		{0, 1000, 0},                        // hedging off
		{95, minSamples - 1, 0},             // too few samples to trust
		{50, 128, 64 * time.Millisecond},    // (128-1)*0.5 = index 63 -> 64ms
		{95, 512, 486 * time.Millisecond},   // index 485 of 1..512
		{99, 1024, 1018 * time.Millisecond}, // only the last windowSize samples count: 513..1024
	} {
		t.Run(fmt.Sprint(tc.pct, "/", tc.samples), func(t *testing.T) {
			w := newLatencyWindow(tc.pct)
			for i := 1; i <= tc.samples; i++ {
				w.record(time.Duration(i) * time.Millisecond)
			}
			if got := w.hedgeAfter(); got != tc.want {
				t.Fatalf("hedgeAfter = %v, want %v", got, tc.want)
			}
		})
	}
	var off *latencyWindow
	off.record(time.Second)
	if off.hedgeAfter() != 0 {
		t.Fatal("nil window hedges")
	}
}

func TestClassifyWrite(t *testing.T) {
	live := context.Background()
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want writeOutcome
	}{
		{"ok", live, nil, writeDone},
		{"moved", live, &client.APIError{Code: client.CodeMoved}, writeRefresh},
		{"wrapped moved", live, fmt.Errorf("x: %w", &client.APIError{Code: client.CodeMoved}), writeRefresh},
		{"not primary", live, &client.APIError{Code: client.CodeNotPrimary}, writeRedirect},
		{"unavailable", live, &client.APIError{Code: client.CodeUnavailable}, writeBackoff},
		{"connection refused", live, errors.New("dial tcp: connection refused"), writeBackoff},
		{"bad input", live, &client.APIError{Code: client.CodeInvalidArgument}, writeDone},
		{"internal", live, &client.APIError{Code: client.CodeInternal}, writeDone},
		{"deadline passed", dead, &client.APIError{Code: client.CodeUnavailable}, writeDone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := classifyWrite(tc.ctx, tc.err); got != tc.want {
				t.Fatalf("classifyWrite = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLoadOf(t *testing.T) {
	l := loadOf(&client.LoadReport{QueueDepth: 3, LatencyP50Ms: 2})
	if l.QueueDepth != 3 || l.ServiceTime != 2*time.Millisecond || l.Capacity != 500 {
		t.Fatalf("loadOf = %+v", l)
	}
	if l := loadOf(&client.LoadReport{QueueDepth: -1}); l.QueueDepth != 0 || l.Capacity != 0 || l.ServiceTime != 0 {
		t.Fatalf("loadOf of an empty report = %+v", l)
	}
}
