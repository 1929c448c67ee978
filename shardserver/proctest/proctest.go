package proctest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultStartTimeout is how long Start waits for /healthz when Spec.StartTimeout is 0.
const DefaultStartTimeout = 20 * time.Second

// ErrKilled is wrapped by the error of Stop when the process outlived the grace period
// after SIGTERM and was killed.
var ErrKilled = errors.New("killed after the grace period")

// Build compiles the shardserver command into dir and returns the binary's path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "shardserver")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/annshard/annshard/shardserver").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building shardserver: %w\n%s", err, out)
	}
	return bin, nil
}

// Binary is the shardserver binary of a test package, built once on first use into a
// temporary directory. The zero value is ready; Path is safe for concurrent use.
type Binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Path builds the binary on the first call and returns its path (or the build error).
func (b *Binary) Path() (string, error) {
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "shardserver-bin"); b.err != nil {
			return
		}
		b.path, b.err = Build(b.dir)
	})
	return b.path, b.err
}

// Need is for tests that run real processes: it skips t under -race (the detector sees
// nothing of another process, and the plain pass runs these tests) and under -short, and
// otherwise returns the binary's path, failing t if it does not build.
func (b *Binary) Need(t testing.TB) string {
	t.Helper()
	if raceEnabled || testing.Short() {
		t.Skip("real-process test: runs in the non-race, non-short pass")
	}
	path, err := b.Path()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// Remove deletes the build directory; call it from TestMain once the tests have run.
func (b *Binary) Remove() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// FreeAddr returns a loopback address with a port nobody listens on right now.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Spec says how to start one process.
type Spec struct {
	Bin  string   // the shardserver binary (see Build)
	Role string   // the subcommand: "serve" or "route"
	Addr string   // the --listen address; empty: FreeAddr picks one
	Args []string // flags after `<role> --listen <addr>`
	Env  []string // added to this process's environment
	// LogPath receives the process's stdout and stderr. It is created if missing and
	// appended to otherwise, so restarts with the same Spec keep every run's output.
	LogPath string
	// StartTimeout bounds the wait for /healthz; 0 means DefaultStartTimeout.
	StartTimeout time.Duration
}

// Process is one running (or exited) shardserver process.
type Process struct {
	Addr    string // the listen address, host:port
	LogPath string

	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited and err is set
	err    error         // cmd.Wait's result
}

// Start runs the process described by s and waits until GET /healthz answers 2xx.
// If the process exits first, or does not answer within the start timeout, or ctx
// ends, Start kills it and returns an error that includes its log.
func Start(ctx context.Context, s Spec) (*Process, error) {
	if s.Bin == "" || s.Role == "" || s.LogPath == "" {
		return nil, errors.New("proctest: Spec needs Bin, Role and LogPath")
	}
	addr := s.Addr
	if addr == "" {
		var err error
		if addr, err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	args := append([]string{s.Role, "--listen", addr}, s.Args...)
	cmd := exec.Command(s.Bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), s.Env...)
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting shardserver %s: %w", s.Role, err)
	}
	p := &Process{Addr: addr, LogPath: s.LogPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()

	timeout := s.StartTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// No keep-alive: no idle connection to the child outlives the wait.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		err := p.health(sctx, hc)
		if err == nil {
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, p.startErr(s.Role, "exited during start-up: "+exitText(p.err))
		default:
		}
		select {
		case <-sctx.Done():
			p.Kill()
			if ctx.Err() != nil {
				return nil, p.startErr(s.Role, fmt.Sprintf("start-up abandoned: %v (last health check: %v)", ctx.Err(), err))
			}
			return nil, p.startErr(s.Role, fmt.Sprintf("not healthy after %v: %v", timeout, err))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// health makes one GET /healthz with a 1s timeout.
func (p *Process) health(ctx context.Context, hc *http.Client) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET /healthz: HTTP %d", resp.StatusCode)
	}
	return nil
}

func (p *Process) startErr(role, what string) error {
	return fmt.Errorf("shardserver %s %s: %s\nlog:\n%s", role, p.Addr, what, p.Log())
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// Pid is the operating-system process id, e.g. to read its CPU time from /proc or to
// attach a profiler.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// URL is the process's base URL, http://<addr>.
func (p *Process) URL() string { return "http://" + p.Addr }

// Stop sends SIGTERM and waits for the process to exit; after grace it sends SIGKILL,
// waits, and returns an error wrapping ErrKilled. Otherwise it returns the exit error
// (nil for exit status 0), also when the process had already exited.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.exited:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
		return p.err
	case <-t.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	return fmt.Errorf("shardserver %s: still running %v after SIGTERM: %w", p.Addr, grace, ErrKilled)
}

// Kill ends the process at once with SIGKILL, like a crash, and waits for it to exit.
// A process already gone is fine.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Done returns a channel that receives the exit error (nil for exit status 0) once the
// process has exited. Every call returns a new channel, so any number of goroutines
// can wait.
func (p *Process) Done() <-chan error {
	ch := make(chan error, 1)
	go func() {
		<-p.exited
		ch <- p.err
	}()
	return ch
}

// Log returns the log file's contents so far (all runs written to it).
func (p *Process) Log() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", p.LogPath, err)
	}
	return string(b)
}
