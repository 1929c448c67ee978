package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A PID file holds "<pid> <start time>": the start time (field 22 of /proc/<pid>/stat)
// tells a live process of ours from an unrelated one that reused the PID after a
// crash, so a stale file can never make `down` signal a stranger.

// WritePIDFile records a process we started.
func WritePIDFile(path string, pid int) error {
	st, err := startTime(pid)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating pid dir: %w", err)
	}
	return writeFileAtomic(path, fmt.Appendf(nil, "%d %d\n", pid, st), 0o644)
}

// ReadPIDFile returns the PID recorded in path if that process is still the one we
// started and has not exited; ok is false for a missing or stale file.
func ReadPIDFile(path string) (pid int, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return 0, false
	}
	pid, err1 := strconv.Atoi(f[0])
	want, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return 0, false
	}
	st, err := startTime(pid)
	if err != nil || st != want || !running(pid) {
		return 0, false
	}
	return pid, true
}

// procStat returns the fields of /proc/<pid>/stat after the command name, which may
// itself contain spaces and parentheses.
func procStat(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, fmt.Errorf("reading stat of %d: %w", pid, err)
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return nil, fmt.Errorf("parsing stat of %d: no command name", pid)
	}
	return strings.Fields(string(data[i+1:])), nil
}

func startTime(pid int) (uint64, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	// Field 22 overall; fields after the command start at field 3.
	if len(f) < 20 {
		return 0, fmt.Errorf("parsing stat of %d: short", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// running is false for an exited process even while it is a zombie: our detached
// daemons are reparented to a PID 1 that may never reap them.
func running(pid int) bool {
	f, err := procStat(pid)
	if err != nil || len(f) == 0 {
		return false
	}
	return f[0] != "Z" && f[0] != "X"
}

// StopPID sends SIGTERM to pid, waits up to grace for it to exit, then SIGKILLs it
// and waits again. It reports whether it had to kill.
func StopPID(pid int, grace time.Duration) (killed bool, err error) {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, fmt.Errorf("signalling %d: %w", pid, err)
	}
	if waitExit(pid, grace) {
		return false, nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return true, fmt.Errorf("killing %d: %w", pid, err)
	}
	if !waitExit(pid, 10*time.Second) {
		return true, fmt.Errorf("process %d survived SIGKILL", pid)
	}
	return true, nil
}

func waitExit(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !running(pid) {
			// Reap it if it is our child (in-process use, e.g. tests); harmless otherwise.
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startDetached starts argv in its own session with output appended to logPath, so
// it outlives the `up` command and a terminal's hang-up, and records its PID.
func startDetached(pidPath, logPath string, argv []string, env []string) (int, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return 0, fmt.Errorf("creating log dir: %w", err)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("opening log %s: %w", logPath, err)
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	pid := cmd.Process.Pid
	if err := WritePIDFile(pidPath, pid); err != nil {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		return 0, err
	}
	_ = cmd.Process.Release()
	return pid, nil
}
