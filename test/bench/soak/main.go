// Command soak is the crash soak of the shard server: it runs a primary `shardserver
// serve` process and a replica following it, writes to the primary from concurrent
// writers, kills the primary with SIGKILL in the middle of their writes a given number
// of times, restarts it on the same data directory, and after every round checks that
// every acknowledged write is on the primary and, once the replica has caught up, on
// the replica too: each id present with exactly the vector last acknowledged, or absent
// when its last acknowledged write deleted it. A write that failed when the process
// died is unacknowledged: it may be there or not, but all of its batch or none.
//
// It prints the rounds, the writes acknowledged, the writes lost (must be 0), and the
// recovery time (from starting the killed process until it answers /readyz) at p50 and
// p99, plus how long the replica took to catch up. It exits 1 if any write was lost or
// any check failed.
//
// Usage: go run ./test/bench/soak [-rounds 100 -writers 4 -json]  (make soak)
//
// Everything runs on 127.0.0.1 in temporary directories, removed at the end unless
// -keep is given (then they are printed, with the servers' logs).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/proctest"
)

type options struct {
	rounds, writers, ids, dim, maxBatch int
	replicaKillEvery                    int
	minRun, maxRun                      time.Duration
	walSync                             string
	snapshotRecords                     int
	bin                                 string
	keep, json                          bool
	seed                                uint64
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 100, "how many times the primary is killed with SIGKILL")
	flag.IntVar(&o.writers, "writers", 4, "concurrent writers, each on its own ids")
	flag.IntVar(&o.ids, "ids", 100, "ids per writer")
	flag.IntVar(&o.dim, "dim", 16, "vector dimension")
	flag.IntVar(&o.maxBatch, "batch", 8, "largest batch of one write (1..batch ids)")
	flag.IntVar(&o.replicaKillEvery, "replica-kill-every", 10, "also kill the replica every this many rounds (0: never)")
	flag.DurationVar(&o.minRun, "min-run", 100*time.Millisecond, "shortest time writers run before a kill")
	flag.DurationVar(&o.maxRun, "max-run", 600*time.Millisecond, "longest time writers run before a kill")
	flag.StringVar(&o.walSync, "wal-sync", "Always", "--wal-sync of the servers: Always or Interval")
	flag.IntVar(&o.snapshotRecords, "snapshot-records", 300, "--snapshot-records of the servers (small: snapshots and WAL trims happen during the soak)")
	flag.StringVar(&o.bin, "bin", "", "shardserver binary (default: go build one)")
	flag.BoolVar(&o.keep, "keep", false, "keep the data directories and logs")
	flag.BoolVar(&o.json, "json", false, "print the result as one JSON object")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the writers and the kill times")
	flag.Parse()
	res, err := run(context.Background(), o)
	if res != nil {
		res.print(o.json)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// result is what the soak prints.
type result struct {
	Rounds           int     `json:"rounds"`
	PrimaryKills     int     `json:"primaryKills"`
	ReplicaKills     int     `json:"replicaKills"`
	Writers          int     `json:"writers"`
	WALSync          string  `json:"walSync"`
	WritesAcked      int     `json:"writesAcknowledged"`
	ItemsAcked       int     `json:"itemsAcknowledged"`
	WritesInDoubt    int     `json:"writesInDoubt"`
	InDoubtApplied   int     `json:"writesInDoubtApplied"`
	Lost             int     `json:"lost"`
	ChecksPrimary    int     `json:"idChecksPrimary"`
	ChecksReplica    int     `json:"idChecksReplica"`
	RecoveryP50Ms    float64 `json:"recoveryP50Ms"`
	RecoveryP99Ms    float64 `json:"recoveryP99Ms"`
	RecoveryMaxMs    float64 `json:"recoveryMaxMs"`
	CatchUpP50Ms     float64 `json:"replicaCatchUpP50Ms"`
	CatchUpP99Ms     float64 `json:"replicaCatchUpP99Ms"`
	FinalSeq         uint64  `json:"finalSeq"`
	FinalVectors     int     `json:"finalVectors"`
	ElapsedS         float64 `json:"elapsedSeconds"`
	FirstLossMessage string  `json:"firstLoss,omitempty"`
}

func (r *result) print(asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
		return
	}
	fmt.Printf("rounds                 %d (primary killed %d times, replica %d times; %d writers, --wal-sync %s)\n",
		r.Rounds, r.PrimaryKills, r.ReplicaKills, r.Writers, r.WALSync)
	fmt.Printf("writes acknowledged    %d (%d ids written); %d failed at a kill, unacknowledged, of which %d were applied whole\n",
		r.WritesAcked, r.ItemsAcked, r.WritesInDoubt, r.InDoubtApplied)
	fmt.Printf("lost                   %d\n", r.Lost)
	fmt.Printf("ids checked            %d on the primary, %d on the replica\n", r.ChecksPrimary, r.ChecksReplica)
	fmt.Printf("recovery (start→ready) p50 %.0f ms   p99 %.0f ms   max %.0f ms\n", r.RecoveryP50Ms, r.RecoveryP99Ms, r.RecoveryMaxMs)
	fmt.Printf("replica catch-up       p50 %.0f ms   p99 %.0f ms\n", r.CatchUpP50Ms, r.CatchUpP99Ms)
	fmt.Printf("final                  seq %d, %d vectors, %.0f s\n", r.FinalSeq, r.FinalVectors, r.ElapsedS)
	if r.FirstLossMessage != "" {
		fmt.Printf("first loss             %s\n", r.FirstLossMessage)
	}
}

// server is one shardserver serve process, restartable on its address and data dir.
type server struct {
	spec proctest.Spec
	p    *proctest.Process
	c    *client.Client
}

func (s *server) start(ctx context.Context) (time.Duration, error) {
	begin := time.Now()
	p, err := proctest.Start(ctx, s.spec)
	if err != nil {
		return 0, err
	}
	s.p = p
	for {
		if err := s.c.Ready(ctx); err == nil {
			return time.Since(begin), nil
		}
		if time.Since(begin) > 60*time.Second {
			return 0, fmt.Errorf("%s: not ready 60s after start; log %s", s.spec.Addr, s.spec.LogPath)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (s *server) kill() {
	if s.p != nil {
		s.p.Kill()
		s.p = nil
	}
}

func run(ctx context.Context, o options) (*result, error) {
	if o.rounds < 1 || o.writers < 1 || o.ids < 1 || o.dim < 2 || o.maxBatch < 1 || o.maxRun < o.minRun {
		return nil, errors.New("need rounds, writers, ids, batch >= 1, dim >= 2 and max-run >= min-run")
	}
	dir, err := os.MkdirTemp("", "annshard-soak")
	if err != nil {
		return nil, err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "soak: data and logs in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	bin := o.bin
	if bin == "" {
		if bin, err = proctest.Build(dir); err != nil {
			return nil, err
		}
	}
	common := []string{"--dimension", strconv.Itoa(o.dim), "--wal-sync", o.walSync, "--m", "8", "--ef-construction", "32",
		"--snapshot-records", strconv.Itoa(o.snapshotRecords), "--wal-segment-bytes", "65536", "--max-lag", "1000000",
		"--drain-timeout", "2s"}
	newServer := func(name string, extra ...string) (*server, error) {
		addr, err := proctest.FreeAddr()
		if err != nil {
			return nil, err
		}
		spec := proctest.Spec{Bin: bin, Role: "serve", Addr: addr, LogPath: filepath.Join(dir, name+".log"),
			Args: append(append([]string{"--data-dir", filepath.Join(dir, name)}, common...), extra...), StartTimeout: time.Minute}
		return &server{spec: spec, c: client.New("http://" + addr)}, nil
	}
	primary, err := newServer("primary")
	if err != nil {
		return nil, err
	}
	replica, err := newServer("replica", "--primary", primary.c.BaseURL())
	if err != nil {
		return nil, err
	}
	defer primary.kill()
	defer replica.kill()
	if _, err := primary.start(ctx); err != nil {
		return nil, err
	}
	if _, err := replica.start(ctx); err != nil {
		return nil, err
	}

	res := &result{Rounds: o.rounds, Writers: o.writers, WALSync: o.walSync}
	start := time.Now()
	rng := rand.New(rand.NewPCG(o.seed, 0x50a4))
	writers := make([]*writer, o.writers)
	for w := range writers {
		writers[w] = newWriter(w, o, rand.New(rand.NewPCG(o.seed, uint64(w))))
	}
	var recovery, catchUp []time.Duration
	for round := range o.rounds {
		// Write until the kill: the writers keep going while the primary dies, so a
		// batch is in flight at the kill; each writer stops at its first failure.
		runCtx, stopWriters := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for _, w := range writers {
			wg.Go(func() { w.run(runCtx, primary.c) })
		}
		time.Sleep(o.minRun + time.Duration(rng.Int64N(int64(o.maxRun-o.minRun)+1)))
		primary.kill()
		res.PrimaryKills++
		killReplica := o.replicaKillEvery > 0 && (round+1)%o.replicaKillEvery == 0
		if killReplica {
			replica.kill()
			res.ReplicaKills++
		}
		stopWriters()
		wg.Wait()

		d, err := primary.start(ctx)
		if err != nil {
			return res, fmt.Errorf("round %d: restarting the primary: %w", round, err)
		}
		recovery = append(recovery, d)
		if killReplica {
			if _, err := replica.start(ctx); err != nil {
				return res, fmt.Errorf("round %d: restarting the replica: %w", round, err)
			}
		}
		// The primary first: it settles the batches in flight at the kill.
		n, err := checkAll(ctx, writers, primary.c, true, res, fmt.Sprintf("round %d, primary", round))
		res.ChecksPrimary += n
		if err != nil {
			return res, err
		}
		caught := time.Now()
		seq, err := caughtUp(ctx, primary.c, replica.c)
		if err != nil {
			return res, fmt.Errorf("round %d: %w", round, err)
		}
		catchUp = append(catchUp, time.Since(caught))
		n, err = checkAll(ctx, writers, replica.c, false, res, fmt.Sprintf("round %d, replica at seq %d", round, seq))
		res.ChecksReplica += n
		if err != nil {
			return res, err
		}
		if extra, err := checkCounts(ctx, writers, primary.c, replica.c); err != nil {
			return res, fmt.Errorf("round %d: %w", round, err)
		} else if extra != "" {
			res.loss(1, fmt.Sprintf("round %d: %s", round, extra))
		}
	}
	for _, w := range writers {
		res.WritesAcked += w.acks
		res.ItemsAcked += w.items
		res.WritesInDoubt += w.inDoubt
		res.InDoubtApplied += w.inDoubtApplied
	}
	if lr, err := primary.c.Load(ctx); err == nil {
		res.FinalSeq, res.FinalVectors = lr.WALSeq, lr.Vectors
	}
	res.RecoveryP50Ms, res.RecoveryP99Ms, res.RecoveryMaxMs = percentiles(recovery)
	res.CatchUpP50Ms, res.CatchUpP99Ms, _ = percentiles(catchUp)
	res.ElapsedS = time.Since(start).Seconds()
	if res.Lost > 0 {
		return res, fmt.Errorf("%d checks found acknowledged writes missing or wrong (logs in %s with -keep)", res.Lost, dir)
	}
	return res, nil
}

// checkAll checks every writer's ids on one server (see writer.check), counting every
// id that does not hold its acknowledged state as a lost write; it returns the ids
// checked.
func checkAll(ctx context.Context, writers []*writer, c *client.Client, settle bool, res *result, where string) (int, error) {
	total := 0
	for _, w := range writers {
		n, bad, first, err := w.check(ctx, c, settle)
		total += n
		if err != nil {
			return total, fmt.Errorf("%s: %w", where, err)
		}
		if bad > 0 {
			res.loss(bad, where+": "+first)
		}
	}
	return total, nil
}

// loss counts n lost writes and keeps the first one's description.
func (r *result) loss(n int, msg string) {
	r.Lost += n
	if r.FirstLossMessage == "" {
		r.FirstLossMessage = msg
	}
}

// caughtUp waits until the replica has applied the primary's last record and is ready.
func caughtUp(ctx context.Context, primary, replica *client.Client) (uint64, error) {
	want, err := primary.Load(ctx)
	if err != nil {
		return 0, fmt.Errorf("primary load report: %w", err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		lr, err := replica.Load(ctx)
		if err == nil && lr.WALSeq >= want.WALSeq && lr.Ready {
			return lr.WALSeq, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("replica not caught up with seq %d a minute later: %+v, %v", want.WALSeq, lr, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkCounts compares the vector counts of both servers with what the writers know:
// an id the model says is absent but a server stores is caught by the id checks; this
// catches ids that no writer ever wrote.
func checkCounts(ctx context.Context, writers []*writer, servers ...*client.Client) (string, error) {
	want := 0
	for _, w := range writers {
		want += w.live()
	}
	for i, c := range servers {
		lr, err := c.Load(ctx)
		if err != nil {
			return "", err
		}
		if lr.Vectors != want {
			return fmt.Sprintf("server %d stores %d vectors, the writers' acknowledged state has %d", i, lr.Vectors, want), nil
		}
	}
	return "", nil
}

func percentiles(ds []time.Duration) (p50, p99, maxMs float64) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	at := func(q float64) float64 { return ms(s[int(math.Ceil(q*float64(len(s))))-1]) }
	return at(0.50), at(0.99), ms(s[len(s)-1])
}

// writer owns the ids w<n>-<i> and knows, for each, the version of its last
// acknowledged write (0: never written or deleted) and of its batch in flight when
// the primary died (settled by the next check of the primary).
type writer struct {
	id, dim, ids, maxBatch int
	rng                    *rand.Rand
	version                int         // versions grow per batch, so every write is told apart
	acked                  map[int]int // id index -> version; absent or 0: not stored
	pending                map[int]int // the batch in flight at the kill: id -> version (0 = delete)
	acks, items, inDoubt   int         // counters for the result
	inDoubtApplied         int
}

func newWriter(id int, o options, rng *rand.Rand) *writer {
	return &writer{id: id, dim: o.dim, ids: o.ids, maxBatch: o.maxBatch, rng: rng, acked: map[int]int{}}
}

func (w *writer) name(i int) string { return fmt.Sprintf("w%d-%d", w.id, i) }

// vector is the content of id i at version v: every component depends on both, so a
// vector of another write or a torn one never passes for it.
func (w *writer) vector(i, v int) []float32 {
	vec := make([]float32, w.dim)
	vec[0], vec[1] = float32(v), float32(i)
	r := rand.New(rand.NewPCG(uint64(w.id)<<32|uint64(i), uint64(v)))
	for j := 2; j < len(vec); j++ {
		vec[j] = r.Float32()*2 - 1
	}
	return vec
}

// run writes batches until ctx ends or a write fails (the primary died): then the
// batch stays pending, to be settled by the next check.
func (w *writer) run(ctx context.Context, c *client.Client) {
	for ctx.Err() == nil {
		w.version++
		n := 1 + w.rng.IntN(w.maxBatch)
		batch := map[int]int{}
		for range n {
			batch[w.rng.IntN(w.ids)] = w.version
		}
		var err error
		if w.rng.IntN(5) == 0 {
			req := &client.DeleteRequest{}
			for i := range batch {
				req.IDs = append(req.IDs, w.name(i))
				batch[i] = 0
			}
			_, err = c.DeleteBatch(context.WithoutCancel(ctx), req)
		} else {
			req := &client.UpsertRequest{}
			for i, v := range batch {
				req.Vectors = append(req.Vectors, client.Vector{ID: w.name(i), Vector: w.vector(i, v), Partition: fmt.Sprintf("p%d", i%3)})
			}
			_, err = c.Upsert(context.WithoutCancel(ctx), req)
		}
		if err != nil {
			w.pending = batch
			w.inDoubt++
			return
		}
		w.acks++
		w.items += len(batch)
		for i, v := range batch {
			w.acked[i] = v
		}
	}
}

// live counts the ids whose acknowledged state is stored.
func (w *writer) live() int {
	n := 0
	for _, v := range w.acked {
		if v != 0 {
			n++
		}
	}
	return n
}

// state reads id i from a server: its version, 0 when absent, or an error when the
// stored vector is not exactly the one some version of i would have.
func (w *writer) state(ctx context.Context, c *client.Client, i int) (int, error) {
	v, err := c.Get(ctx, w.name(i), "")
	if client.IsCode(err, client.CodeNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	ver := int(v.Vector[0])
	if ver < 1 || !slices.Equal(v.Vector, w.vector(i, ver)) || v.Partition != fmt.Sprintf("p%d", i%3) {
		return -1, nil
	}
	return ver, nil
}

// check compares every id of the writer on a server with the acknowledged state. On the
// primary (settle) it also decides the pending batch: all of it applied or none (else
// that is a loss too), and folds it into the acknowledged state. It returns the ids
// checked, how many did not hold their acknowledged state, a description of the first,
// and errors reaching the server.
func (w *writer) check(ctx context.Context, c *client.Client, settle bool) (checked, bad int, first string, err error) {
	note := func(format string, args ...any) {
		bad++
		if first == "" {
			first = fmt.Sprintf("writer %d: ", w.id) + fmt.Sprintf(format, args...)
		}
	}
	applied, notApplied := 0, 0
	for i := range w.ids {
		got, err := w.state(ctx, c, i)
		if err != nil {
			return checked, bad, first, fmt.Errorf("get %s: %w", w.name(i), err)
		}
		checked++
		want := w.acked[i]
		if settle && w.pending != nil {
			if p, ok := w.pending[i]; ok {
				switch {
				case got == p && got == want:
				case got == p:
					applied++
				case got == want:
					notApplied++
				default:
					note("%s has version %d, neither the acknowledged %d nor the in-flight %d", w.name(i), got, want, p)
				}
				continue
			}
		}
		if got != want {
			note("%s has version %d, the acknowledged one is %d", w.name(i), got, want)
		}
	}
	if settle && w.pending != nil {
		if applied > 0 && notApplied > 0 {
			note("the batch in flight at the kill is half applied (%d of %d ids)", applied, applied+notApplied)
		}
		if applied > 0 {
			w.inDoubtApplied++
			for i, v := range w.pending {
				w.acked[i] = v
			}
		}
		w.pending = nil
	}
	return checked, bad, first, nil
}
