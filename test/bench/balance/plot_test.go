package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/annshard/annshard/shardserver/balance"
)

func TestPlotP99(t *testing.T) {
	scenarios := []string{"healthy", "slow5x"}
	policies := []balance.Policy{balance.RoundRobin, balance.Adaptive}
	results := map[string]map[balance.Policy]stats{
		"healthy": {balance.RoundRobin: {p99: 12}, balance.Adaptive: {p99: 11}},
		"slow5x":  {balance.RoundRobin: {p99: 60}, balance.Adaptive: {p99: 14}},
	}
	path := filepath.Join(t.TempDir(), "p99.png")
	if err := plotP99(path, scenarios, policies, results, options{qps: 200, rounds: 3}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(raw, []byte("\x89PNG")) {
		t.Fatalf("not a PNG: %v", err)
	}
	if checkPlotPath("p99.gif") == nil {
		t.Fatal("-plot p99.gif accepted")
	}
}
