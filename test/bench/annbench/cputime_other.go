//go:build !unix

package main

import "time"

// cpuTime is unknown here: per-CPU-second figures are reported as 0.
func cpuTime() time.Duration { return 0 }
