package wal

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The crash test runs this test binary again as a child process (crashChildEnv set)
// that appends from several goroutines and prints each acknowledged record; the
// parent kills it with SIGKILL at a random moment. Rounds alternate SyncAlways and
// SyncInterval: a process crash must lose nothing acknowledged in either mode (the
// page cache survives it; only a machine crash separates the two).
const (
	crashChildEnv   = "ANNSHARD_WAL_CRASH_CHILD_DIR"
	crashRoundEnv   = "ANNSHARD_WAL_CRASH_ROUND"
	crashWriters    = 4
	crashChildLimit = 20 * time.Second // the child exits on its own if nobody kills it
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
		if err := crashChild(dir, round, crashMode(round)); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashPayload is the data writer g appends as its i-th record in a round. It
// names its own origin, so any record found in the log can be checked whole.
func crashPayload(round, g, i int) []byte {
	head := fmt.Sprintf("r%d g%d i%d|", round, g, i)
	r := rand.New(rand.NewPCG(uint64(round)<<40|uint64(g)<<32|uint64(i), 99))
	b := make([]byte, len(head)+r.IntN(600))
	copy(b, head)
	for j := len(head); j < len(b); j++ {
		b[j] = byte(r.Uint32())
	}
	return b
}

// checkCrashPayload reports whether b is exactly some crashPayload.
func checkCrashPayload(b []byte) bool {
	head, _, ok := bytes.Cut(b, []byte("|"))
	if !ok {
		return false
	}
	var round, g, i int
	if _, err := fmt.Sscanf(string(head), "r%d g%d i%d", &round, &g, &i); err != nil {
		return false
	}
	return bytes.Equal(b, crashPayload(round, g, i))
}

// crashMode is the sync mode of a round's child.
func crashMode(round int) SyncMode {
	if round%2 == 0 {
		return SyncAlways
	}
	return SyncInterval
}

func crashChild(dir string, round int, mode SyncMode) error {
	l, err := Open(dir, Options{Sync: mode, SegmentBytes: 32 << 10})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), crashChildLimit)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, crashWriters)
	for g := range crashWriters {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				data := crashPayload(round, g, i)
				seq, err := l.Append(ctx, data)
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				// One write(2) per line, well under PIPE_BUF: a kill never
				// leaves half a line the parent would misread.
				line := strconv.FormatUint(seq, 10) + " " + hex.EncodeToString(data) + "\n"
				mu.Lock()
				_, err = os.Stdout.WriteString(line)
				mu.Unlock()
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	return l.Close()
}

// TestCrash kills a writing child process at random moments (fixed seed) and checks
// after each kill that every acknowledged record is in the log, intact and in its
// place, and that every record in the log is a whole record a writer appended.
func TestCrash(t *testing.T) {
	rounds := 10
	if testing.Short() {
		rounds = 2
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(2026, 11))
	acked := map[uint64][]byte{}
	for round := range rounds {
		lines := runCrashChild(t, dir, round, time.Duration(rng.IntN(150))*time.Millisecond)
		for _, line := range lines {
			seqStr, hexData, ok := strings.Cut(line, " ")
			seq, err1 := strconv.ParseUint(seqStr, 10, 64)
			data, err2 := hex.DecodeString(hexData)
			if !ok || err1 != nil || err2 != nil {
				t.Fatalf("round %d: bad line from child: %q", round, line)
			}
			if prev, dup := acked[seq]; dup {
				t.Fatalf("round %d: seq %d acknowledged twice (%q and %q)", round, seq, prev[:10], data[:10])
			}
			acked[seq] = data
		}

		l, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		next, found := uint64(1), 0
		err = l.Read(1, func(r Record) error {
			if r.Seq != next {
				return fmt.Errorf("seq %d where %d was expected", r.Seq, next)
			}
			next++
			if !checkCrashPayload(r.Data) {
				return fmt.Errorf("seq %d holds %d bytes that no writer appended", r.Seq, len(r.Data))
			}
			if want, ok := acked[r.Seq]; ok {
				if !bytes.Equal(r.Data, want) {
					return fmt.Errorf("seq %d holds other data than was acknowledged", r.Seq)
				}
				found++
			}
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if found != len(acked) {
			t.Fatalf("round %d: %d of %d acknowledged records in the log (last seq %d)", round, found, len(acked), l.LastSeq())
		}
		t.Logf("round %d (%v): %d records acknowledged by this child, %d in the log, all %d acknowledged so far present",
			round, crashMode(round), len(lines), l.LastSeq(), len(acked))
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if len(acked) < rounds {
		t.Fatalf("only %d records acknowledged in %d rounds", len(acked), rounds)
	}
}

// runCrashChild starts a writing child on dir, kills it with SIGKILL delay after
// its first acknowledged record and returns the complete lines it printed.
func runCrashChild(t *testing.T, dir string, round int, delay time.Duration) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	done := make(chan []string, 1)
	go func() {
		var lines []string
		r := bufio.NewReader(out)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				// A line without its newline was cut by the kill: not acknowledged
				// as far as the parent can tell, so it is dropped.
				if err != io.EOF {
					t.Errorf("reading child output: %v", err)
				}
				break
			}
			if len(lines) == 0 {
				close(first)
			}
			lines = append(lines, strings.TrimSuffix(line, "\n"))
		}
		done <- lines
	}()
	select {
	case <-first:
		time.Sleep(delay)
	case lines := <-done:
		cmd.Wait()
		t.Fatalf("round %d: child exited before acknowledging anything (%d lines): %s", round, len(lines), stderr.String())
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("round %d: no acknowledged record within 10s: %s", round, stderr.String())
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	lines := <-done
	if err := cmd.Wait(); err == nil {
		t.Fatalf("round %d: child exited cleanly before the kill: %s", round, stderr.String())
	}
	return lines
}
