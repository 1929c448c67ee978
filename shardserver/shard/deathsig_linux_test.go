package shard

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes a server process get SIGKILL if the test binary dies (a timeout,
// a panic), so no test leaves a server running.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
