//go:build race

package shard

// raceEnabled skips the real-process tests under the race detector: they exercise a
// separately built binary, so the detector sees nothing of them, and they run in the
// plain `go test` pass of `make test`.
const raceEnabled = true
