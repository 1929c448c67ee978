package shard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/proctest"
)

// bin is the shardserver binary the process tests run, built once on first use.
var (
	bin     proctest.Binary
	binPath string
)

func TestMain(m *testing.M) {
	code := m.Run()
	bin.Remove()
	os.Exit(code)
}

// needProcesses builds the binary (once) or skips: under -race (the detector would see
// nothing of another process; the plain pass runs these) and under -short.
func needProcesses(t *testing.T) {
	t.Helper()
	binPath = bin.Need(t)
}

// proc is one shardserver serve process, restartable on the same address, data
// directory and log.
type proc struct {
	t    *testing.T
	addr string
	dir  string
	args []string
	log  string
	p    *proctest.Process // nil when not running
}

func newProc(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	addr, err := proctest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return &proc{t: t, addr: addr, dir: dir, args: args, log: filepath.Join(t.TempDir(), "server.log")}
}

func (p *proc) url() string { return "http://" + p.addr }

// start runs the process and waits until /healthz answers.
func (p *proc) start() {
	p.t.Helper()
	args := append([]string{"--data-dir", p.dir, "--dimension", strconv.Itoa(testDim),
		"--m", "8", "--ef-construction", "48", "--drain-timeout", "5s"}, p.args...)
	sp, err := proctest.Start(context.Background(), proctest.Spec{Bin: binPath, Role: "serve", Addr: p.addr, Args: args,
		Env: []string{"GOMAXPROCS=2"}, LogPath: p.log})
	if err != nil {
		p.t.Fatal(err)
	}
	p.p = sp
	p.t.Cleanup(sp.Kill)
}

func (p *proc) fail(format string, args ...any) {
	p.t.Helper()
	b, _ := os.ReadFile(p.log)
	p.t.Fatalf("server %s: %s\nlog:\n%s", p.addr, fmt.Sprintf(format, args...), b)
}

// kill sends SIGKILL and waits; a process already gone is fine.
func (p *proc) kill() {
	if p.p == nil {
		return
	}
	p.p.Kill()
	p.p = nil
}

// term sends SIGTERM and returns the exit error (nil for exit 0).
func (p *proc) term() error {
	p.t.Helper()
	err := p.p.Stop(30 * time.Second)
	p.p = nil
	if errors.Is(err, proctest.ErrKilled) {
		p.fail("did not exit 30s after SIGTERM")
	}
	return err
}

// model tracks one writer's view of its own ids: the state after every acknowledged
// write, and the one write in flight when the server died (if any).
type model struct {
	acked   map[string]float32 // id -> version; -1 deleted
	pending map[string]float32
}

// writer issues batches of upserts and deletes to its own ids until stop or an error.
// Each vector's first component is the batch's version, so the reader can tell which
// write a stored vector came from.
// It checks stop only between batches, so a stopped writer leaves nothing in flight.
func writer(stop *atomic.Bool, c *client.Client, w int, r interface{ IntN(int) int }, m *model, version *float32) error {
	ctx := context.Background()
	for !stop.Load() {
		*version++
		batch := map[string]float32{}
		n := 1 + r.IntN(8)
		del := r.IntN(5) == 0
		for range n {
			batch[fmt.Sprintf("w%d-%d", w, r.IntN(60))] = *version
		}
		var err error
		if del {
			req := &client.DeleteRequest{}
			for id := range batch {
				req.IDs = append(req.IDs, id)
				batch[id] = -1
			}
			_, err = c.DeleteBatch(ctx, req)
		} else {
			req := &client.UpsertRequest{}
			for id := range batch {
				vec := make([]float32, testDim)
				vec[0], vec[1] = *version, float32(w)
				req.Vectors = append(req.Vectors, client.Vector{ID: id, Vector: vec, Partition: fmt.Sprintf("p%d", w%3)})
			}
			_, err = c.Upsert(ctx, req)
		}
		if err != nil {
			m.pending = batch
			return err
		}
		for id, v := range batch {
			m.acked[id] = v
		}
	}
	return nil
}

// stateOf reads an id's version from a server: -1 when absent.
func stateOf(ctx context.Context, c *client.Client, id string) (float32, error) {
	v, err := c.Get(ctx, id, "")
	if client.IsCode(err, client.CodeNotFound) {
		return -1, nil
	}
	if err != nil {
		return 0, err
	}
	return v.Vector[0], nil
}

func stateOrAbsent(m map[string]float32, id string) float32 {
	if v, ok := m[id]; ok {
		return v
	}
	return -1
}

// checkModel verifies every acknowledged write is present and the pending batch is all
// or nothing, then folds the pending batch into acked if it was applied.
func checkModel(ctx context.Context, c *client.Client, w int, m *model) error {
	for id, want := range m.acked {
		if _, inPending := m.pending[id]; inPending {
			continue
		}
		got, err := stateOf(ctx, c, id)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("writer %d: %s has version %v, the acknowledged one is %v", w, id, got, want)
		}
	}
	if len(m.pending) == 0 {
		return nil
	}
	applied, notApplied := 0, 0
	for id, v := range m.pending {
		got, err := stateOf(ctx, c, id)
		if err != nil {
			return err
		}
		before := stateOrAbsent(m.acked, id)
		switch {
		case got == v && got == before:
		case got == v:
			applied++
		case got == before:
			notApplied++
		default:
			return fmt.Errorf("writer %d: %s has version %v, neither acknowledged %v nor pending %v", w, id, got, before, v)
		}
	}
	if applied > 0 && notApplied > 0 {
		return fmt.Errorf("writer %d: the unacknowledged batch is half applied (%d of %d ids)", w, applied, applied+notApplied)
	}
	if applied > 0 {
		for id, v := range m.pending {
			m.acked[id] = v
		}
	}
	m.pending = nil
	return nil
}

func TestCrashRecovery(t *testing.T) {
	needProcesses(t)
	dir := t.TempDir()
	const writers, rounds = 6, 4
	r := newRand(42)
	models := make([]*model, writers)
	versions := make([]float32, writers)
	for i := range models {
		models[i] = &model{acked: map[string]float32{}}
	}
	for round := range rounds {
		syncMode := "Always"
		if round%2 == 1 {
			syncMode = "Interval"
		}
		p := newProc(t, dir, "--wal-sync", syncMode, "--snapshot-records", "40", "--wal-segment-bytes", "16384")
		p.start()
		c := client.New(p.url())
		ctx := context.Background()
		for w, m := range models {
			if err := checkModel(ctx, c, w, m); err != nil {
				p.fail("round %d: %v", round, err)
			}
		}
		var stop atomic.Bool
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			wr := newRand(uint64(100*round + w))
			go func() {
				defer wg.Done()
				_ = writer(&stop, c, w, wr, models[w], &versions[w])
			}()
		}
		time.Sleep(time.Duration(300+r.IntN(900)) * time.Millisecond)
		p.kill()
		stop.Store(true)
		wg.Wait()
		batches := 0
		for _, v := range versions {
			batches += int(v)
		}
		t.Logf("round %d (%s): killed after %d batches in all rounds", round, syncMode, batches)
	}
	p := newProc(t, dir)
	p.start()
	for w, m := range models {
		if err := checkModel(context.Background(), client.New(p.url()), w, m); err != nil {
			p.fail("after the last crash: %v", err)
		}
	}
	if err := p.term(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

func TestGracefulShutdown(t *testing.T) {
	needProcesses(t)
	dir := t.TempDir()
	p := newProc(t, dir, "--snapshot-interval", "1h")
	p.start()
	c := client.New(p.url())
	ctx := context.Background()
	m := &model{acked: map[string]float32{}}
	var version float32
	var stop atomic.Bool
	errc := make(chan error, 1)
	go func() { errc <- writer(&stop, c, 0, newRand(7), m, &version) }()
	time.Sleep(300 * time.Millisecond)
	if err := p.term(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	stop.Store(true)
	<-errc
	snaps, _ := filepath.Glob(filepath.Join(dir, "snapshots", "snap-*.snap"))
	if len(snaps) == 0 {
		t.Fatal("no snapshot written on SIGTERM")
	}
	p.start()
	if err := checkModel(ctx, client.New(p.url()), 0, m); err != nil {
		p.fail("after SIGTERM and restart: %v", err)
	}
	if len(m.acked) == 0 {
		t.Fatal("no write was acknowledged before SIGTERM")
	}
	rep, err := client.New(p.url()).Load(ctx)
	if err != nil || !rep.Ready {
		t.Fatalf("after restart: %+v, %v", rep, err)
	}
}

// TestReplication runs a primary and two replicas as processes, writes concurrently,
// kills and restarts a replica and then the primary, and checks all three converge.
func TestReplication(t *testing.T) {
	needProcesses(t)
	const token = "repl-token"
	t.Setenv("ANNSHARD_TOKEN", token)
	common := []string{"--snapshot-records", "30", "--wal-segment-bytes", "8192", "--max-lag", "5"}
	primary := newProc(t, t.TempDir(), common...)
	primary.start()
	replicas := []*proc{
		newProc(t, t.TempDir(), append([]string{"--primary", primary.url()}, common...)...),
		newProc(t, t.TempDir(), append([]string{"--primary", primary.url()}, common...)...),
	}
	for _, rp := range replicas {
		rp.start()
	}
	pc := client.New(primary.url(), client.WithToken(token))
	ctx := context.Background()

	const writers = 4
	models := make([]*model, writers)
	versions := make([]float32, writers)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range writers {
		models[w] = &model{acked: map[string]float32{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			wr := newRand(uint64(w))
			for !stop.Load() {
				// Keep writing through the primary's restart: a failed batch becomes
				// pending and is settled when the primary is back.
				if err := writer(&stop, pc, w, wr, models[w], &versions[w]); err != nil {
					for pc.Health(ctx) != nil {
						time.Sleep(20 * time.Millisecond)
					}
					if err := checkModel(ctx, pc, w, models[w]); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	replicas[0].kill()
	time.Sleep(700 * time.Millisecond) // the primary snapshots and trims meanwhile
	replicas[0].start()
	time.Sleep(400 * time.Millisecond)
	primary.kill()
	time.Sleep(300 * time.Millisecond)
	primary.start()
	time.Sleep(700 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for w, m := range models {
		if err := checkModel(ctx, pc, w, m); err != nil {
			primary.fail("%v", err)
		}
	}

	// Converge: every replica reaches the primary's sequence number and is ready.
	want, err := pc.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, rp := range replicas {
		rc := client.New(rp.url())
		for {
			rep, err := rc.Load(ctx)
			if err == nil && rep.WALSeq == want.WALSeq && rep.Ready && rep.Role == client.RoleReplica {
				break
			}
			if time.Now().After(deadline) {
				rp.fail("replica did not converge to seq %d: %+v, %v", want.WALSeq, rep, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ids := 0
	for w, m := range models {
		for id := range m.acked {
			pv, err := stateOf(ctx, pc, id)
			if err != nil {
				t.Fatal(err)
			}
			for i, rp := range replicas {
				rv, err := stateOf(ctx, client.New(rp.url()), id)
				if err != nil || rv != pv {
					t.Fatalf("writer %d id %s: primary has %v, replica %d has %v (%v)", w, id, pv, i, rv, err)
				}
			}
			ids++
		}
	}
	for i, rp := range replicas {
		rep, _ := client.New(rp.url()).Load(ctx)
		if rep.Vectors != want.Vectors {
			t.Fatalf("replica %d holds %d vectors, the primary %d", i, rep.Vectors, want.Vectors)
		}
		_, err := client.New(rp.url(), client.WithToken(token)).Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: "x", Vector: make([]float32, testDim)}}})
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Code != client.CodeNotPrimary || ae.Primary != primary.url() || ae.HTTPStatus != http.StatusMisdirectedRequest {
			t.Fatalf("write to replica %d: %v", i, err)
		}
	}
	b, _ := os.ReadFile(replicas[0].log)
	t.Logf("converged at seq %d with %d vectors; checked %d ids on 3 servers; restarted replica re-bootstrapped: %v",
		want.WALSeq, want.Vectors, ids, strings.Contains(string(b), "Bootstrapped from the primary"))
}
