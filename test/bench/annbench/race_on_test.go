//go:build race

package main

// raceEnabled lets the heaviest test skip under the race detector; it runs in the normal
// pass, and the harness's own concurrency is race-tested with the exact index.
const raceEnabled = true
