package proctest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The real shardserver binary, built once in TestMain.
var bin string

// fakeEnv makes the test binary, started as a child, act as a stand-in server instead
// of running the tests: "ignore-term" serves /healthz and ignores SIGTERM, "mute"
// listens but never answers.
const fakeEnv = "PROCTEST_FAKE_SERVER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		fakeServer(mode)
		return
	}
	var shared Binary
	var err error
	if bin, err = shared.Path(); err != nil {
		shared.Remove()
		panic(err)
	}
	code := m.Run()
	shared.Remove()
	os.Exit(code)
}

// fakeServer is the child side of fakeEnv: os.Args is [test binary, role, --listen, addr].
func fakeServer(mode string) {
	signal.Ignore(syscall.SIGTERM)
	ln, err := net.Listen("tcp", os.Args[3])
	if err != nil {
		os.Exit(3)
	}
	if mode == "mute" {
		time.Sleep(time.Hour)
	}
	_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
}

func serveSpec(t *testing.T) Spec {
	dir := t.TempDir()
	return Spec{Bin: bin, Role: "serve", Args: []string{"--data-dir", filepath.Join(dir, "data"), "--dimension", "4"},
		Env: []string{"GOMAXPROCS=2"}, LogPath: filepath.Join(dir, "serve.log")}
}

func healthy(p *Process) bool {
	resp, err := http.Get(p.URL() + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func exited(p *Process) bool {
	select {
	case <-p.Done():
		return true
	case <-time.After(50 * time.Millisecond):
		return false
	}
}

func TestFreeAddr(t *testing.T) {
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("FreeAddr %q is not on 127.0.0.1", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("FreeAddr %s cannot be listened on: %v", addr, err)
	}
	ln.Close()
}

// TestStartStopRestart starts the real binary, stops it gracefully, restarts it on
// the same address, data directory and log, and checks the log kept both runs.
func TestStartStopRestart(t *testing.T) {
	s := serveSpec(t)
	p, err := Start(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	if !healthy(p) || exited(p) {
		t.Fatalf("after Start: healthy %v, exited %v\n%s", healthy(p), exited(p), p.Log())
	}
	if p.URL() != "http://"+p.Addr || !strings.HasPrefix(p.Addr, "127.0.0.1:") {
		t.Fatalf("URL %q, Addr %q", p.URL(), p.Addr)
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid())); err == nil && exe != s.Bin {
		t.Fatalf("Pid %d runs %s, want %s", p.Pid(), exe, s.Bin)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v\n%s", err, p.Log())
	}
	if err := <-p.Done(); err != nil {
		t.Fatalf("Done after a clean exit: %v", err)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	p.Kill() // a process already gone is fine
	if healthy(p) {
		t.Fatal("still answering after Stop")
	}

	s.Addr = p.Addr
	p2, err := Start(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p2.Kill)
	if p2.Addr != p.Addr || !healthy(p2) {
		t.Fatalf("restart on %s: got %s, healthy %v", p.Addr, p2.Addr, healthy(p2))
	}
	if err := p2.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop after restart: %v", err)
	}
	if n := strings.Count(p2.Log(), "Shard server serving"); n != 2 {
		t.Fatalf("log holds %d runs, want 2:\n%s", n, p2.Log())
	}
}

// TestKill kills the real binary at once, from several goroutines at a time.
func TestKill(t *testing.T) {
	p, err := Start(context.Background(), serveSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	done := p.Done()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Kill()
		}()
	}
	wg.Wait()
	err = <-done
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) || ee.ExitCode() != -1 {
		t.Fatalf("exit after Kill: %v, want killed by a signal", err)
	}
	if err := p.Stop(time.Second); err == nil || errors.Is(err, ErrKilled) {
		t.Fatalf("Stop after Kill: %v, want the exit error", err)
	}
	if strings.Contains(p.Log(), "Shut down") {
		t.Fatalf("a killed server shut down gracefully:\n%s", p.Log())
	}
}

// TestExitDuringStartup: a process that exits before /healthz answers is reported at
// once, with its log.
func TestExitDuringStartup(t *testing.T) {
	s := serveSpec(t)
	s.Args = append(s.Args, "--no-such-flag")
	start := time.Now()
	p, err := Start(context.Background(), s)
	if err == nil {
		p.Kill()
		t.Fatal("Start succeeded with a bad flag")
	}
	if !strings.Contains(err.Error(), "exited during start-up") || !strings.Contains(err.Error(), "flag provided but not defined: -no-such-flag") {
		t.Fatalf("error does not say it exited, with the log: %v", err)
	}
	if d := time.Since(start); d > DefaultStartTimeout/2 {
		t.Fatalf("reported after %v", d)
	}
}

func fakeSpec(t *testing.T, mode string) Spec {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Spec{Bin: exe, Role: "fake", Env: []string{fakeEnv + "=" + mode}, LogPath: filepath.Join(t.TempDir(), "fake.log")}
}

// TestStopGraceKills: a process that ignores SIGTERM is killed after the grace period.
func TestStopGraceKills(t *testing.T) {
	p, err := Start(context.Background(), fakeSpec(t, "ignore-term"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	start := time.Now()
	err = p.Stop(300 * time.Millisecond)
	if !errors.Is(err, ErrKilled) {
		t.Fatalf("Stop: %v, want ErrKilled", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("killed after %v, before the grace period", d)
	}
	if !exited(p) {
		t.Fatal("not exited after Stop")
	}
}

// TestStartTimeout: a process that never answers /healthz is killed when the start
// timeout or the context ends.
func TestStartTimeout(t *testing.T) {
	s := fakeSpec(t, "mute")
	s.StartTimeout = 300 * time.Millisecond
	if _, err := Start(context.Background(), s); err == nil || !strings.Contains(err.Error(), "not healthy after 300ms") {
		t.Fatalf("Start: %v, want not healthy", err)
	}
	s.StartTimeout = 0
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := Start(ctx, s); err == nil || !strings.Contains(err.Error(), "abandoned") {
		t.Fatalf("Start: %v, want abandoned", err)
	}
}

func TestSpecRequired(t *testing.T) {
	if _, err := Start(context.Background(), Spec{Role: "serve", LogPath: "x"}); err == nil {
		t.Fatal("Start without Bin succeeded")
	}
}

func TestBinaryBuildsOnceAndRemoves(t *testing.T) {
	var b Binary
	p1, err := b.Path()
	if err != nil {
		t.Fatal(err)
	}
	info1, err := os.Stat(p1)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := b.Path()
	if err != nil || p2 != p1 {
		t.Fatalf("second Path = %q, %v; want %q", p2, err, p1)
	}
	if info2, err := os.Stat(p2); err != nil || !info2.ModTime().Equal(info1.ModTime()) {
		t.Fatalf("the binary was rebuilt: %v", err)
	}
	b.Remove()
	if _, err := os.Stat(p1); !os.IsNotExist(err) {
		t.Fatalf("after Remove the binary is still there: %v", err)
	}
}
