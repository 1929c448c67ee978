package proctest

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the child get SIGKILL when its parent dies (a test timeout, a
// panic, a killed benchmark), so no server is left running.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
