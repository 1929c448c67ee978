package hnsw

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time used by the process: on a shared, loaded machine the
// queries per CPU-second are far steadier than per wall-clock second.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
