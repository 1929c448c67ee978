//go:build race

package main

// raceEnabled makes the test build the cluster binary with -race too, so the node
// agent's goroutines run under the detector while the test drives real pods.
const raceEnabled = true
