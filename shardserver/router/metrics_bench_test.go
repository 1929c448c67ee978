package router

import (
	"testing"

	"github.com/annshard/annshard/shardserver/balance"
)

func BenchmarkObserve(b *testing.B) {
	m := newMetrics(balance.Adaptive)
	b.ReportAllocs()
	for b.Loop() {
		m.observe("search", "ok", 0.001)
	}
}
