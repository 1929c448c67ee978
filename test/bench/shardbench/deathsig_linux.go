package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent kills the server if the benchmark dies first.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
