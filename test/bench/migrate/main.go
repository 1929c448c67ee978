// Command migrate measures an online slot move between two real `shardserver serve`
// processes: how fast the destination copies a slot set holding N vectors (vectors/s,
// MB/s), how long writes to the slots pause at the handover, and how the copy's rate
// compares with the destination's own bulk upsert rate (a move should be bounded by
// building the index, not by the protocol: goal >= 0.8).
//
// It runs, in order:
//  1. the baseline: a fresh shard process with the same flags takes the N vectors of
//     the slot set by bulk upsert (batches of -batch, -inflight requests at once, vectors
//     in base64 as the import's stream carries them);
//  2. the source: a shard process gets the N vectors of the slot set (slots
//     0..-slots-1) plus N/4 outside it; the destination starts empty at epoch 1;
//  3. the move, under load: -writers write batches of -write-batch vectors (half in the
//     moving slots) at -write-rate batches/s each, routed as a router does (by the
//     epoch; a write refused as moved waits and retries), and -searchers query both
//     shards at the routing epoch and merge their hits (each shard's own slots only).
//     The destination imports the slots (copy, then catch-up); once its lag is small the
//     source freezes them, the destination applies up to the freeze's sequence number,
//     the routing epoch moves to 2, the destination takes the slots, the source learns
//     epoch 2 and drops them (the operator's order);
//  4. the check: every acknowledged write is read back from its owner, every vector of
//     the slot set is on the destination, and no search failed or saw an id twice.
//
// It prints the copy's vectors/s and MB/s (export read and applied, index built, from
// the import's start to its catch-up phase), the whole move's time, the freeze window
// (freeze to handover: the most a write to the slots can wait), the longest write pause
// (the slowest acknowledged write that met the freeze, from its first try to its answer;
// 0 when no write arrived during the window), the slowest write of all, the baseline
// rate and the ratio; -json prints one JSON object instead.
//
// Usage: go run ./test/bench/migrate [-n 100000 -dim 128 -json]
//
// Everything runs on this machine (127.0.0.1): both servers and the load share its
// cores. The load average is printed with the figures.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/proctest"
	"github.com/annshard/annshard/shardserver/slots"
	"github.com/annshard/annshard/test/bench/internal/benchkit"
)

type options struct {
	n, dim, slotCount       int
	batch, inflight         int
	writers, writeBatch     int
	writeRate               float64
	searchers               int
	maxLag                  uint64
	pauseBudget             time.Duration
	bin, serverArgs, outDir string
	json                    bool
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 100000, "vectors in the moving slot set")
	flag.IntVar(&o.dim, "dim", 128, "dimension")
	flag.IntVar(&o.slotCount, "slots", 2048, "the moving slot set is slots 0..slots-1")
	flag.IntVar(&o.batch, "batch", 500, "vectors per upsert request of the loads")
	flag.IntVar(&o.inflight, "inflight", 4, "upsert requests in flight during the loads")
	flag.IntVar(&o.writers, "writers", 2, "writers during the move")
	flag.IntVar(&o.writeBatch, "write-batch", 10, "vectors per write during the move")
	flag.Float64Var(&o.writeRate, "write-rate", 20, "writes per second per writer during the move")
	flag.IntVar(&o.searchers, "searchers", 2, "searchers during the move (as fast as they get answers)")
	flag.Uint64Var(&o.maxLag, "max-lag", 8, "freeze once the destination is at most this many source records behind")
	flag.DurationVar(&o.pauseBudget, "pause-budget", 10*time.Second, "a write refused as moved retries for this long")
	flag.StringVar(&o.bin, "bin", "", "shardserver binary (default: go build one)")
	flag.StringVar(&o.serverArgs, "server-args", "", "extra flags for both servers, space separated")
	flag.StringVar(&o.outDir, "dir", "", "data and log directory (default: a new temporary one, removed at the end)")
	flag.BoolVar(&o.json, "json", false, "print one JSON object")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "migrate:", err)
		os.Exit(1)
	}
}

type result struct {
	Vectors         int64   `json:"vectors"`
	Dim             int     `json:"dim"`
	CopySeconds     float64 `json:"copySeconds"`
	VectorsPerSec   float64 `json:"vectorsPerSecond"`
	MBPerSec        float64 `json:"mbPerSecond"`
	MoveSeconds     float64 `json:"moveSeconds"`
	CatchUpRecords  uint64  `json:"catchUpRecords"`
	FreezeToCaught  float64 `json:"freezeToCaughtUpMs"`
	FreezeWindowMs  float64 `json:"freezeToHandoverMs"`
	LongestPauseMs  float64 `json:"longestWritePauseMs"`
	LongestWriteMs  float64 `json:"longestWriteMs"`
	WritesAcked     int64   `json:"writesAcknowledged"`
	WritesMoved     int64   `json:"writesRetriedAfterMoved"`
	Searches        int64   `json:"searches"`
	BaselinePerSec  float64 `json:"baselineUpsertVectorsPerSecond"`
	Ratio           float64 `json:"ratio"`
	LoadAverage     string  `json:"loadAverage"`
	CopiesOfTheSlot int     `json:"copies"`
}

// vec is the deterministic vector of a seed.
func vec(dim int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	v := make([]float32, dim)
	for i := range v {
		v[i] = r.Float32()
	}
	return v
}

// idsIn returns n ids whose slot is in set (in == true) or not.
func idsIn(set slots.Set, n int, in bool, prefix string) []string {
	out := make([]string, 0, n)
	for i := 0; len(out) < n; i++ {
		id := prefix + strconv.Itoa(i)
		if set.Has(slots.Of(id)) == in {
			out = append(out, id)
		}
	}
	return out
}

type server struct {
	p   *proctest.Process
	c   *client.Client
	dir string
}

func start(ctx context.Context, o options, bin, dir string) (*server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	args := []string{"--data-dir", filepath.Join(dir, "data"), "--dimension", strconv.Itoa(o.dim)}
	if o.serverArgs != "" {
		args = append(args, strings.Fields(o.serverArgs)...)
	}
	p, err := proctest.Start(ctx, proctest.Spec{Bin: bin, Role: "serve", Args: args, LogPath: filepath.Join(dir, "server.log"),
		StartTimeout: 5 * time.Minute})
	if err != nil {
		return nil, err
	}
	return &server{p: p, c: client.New(p.URL()), dir: dir}, nil
}

// bulk upserts the ids (vector seed = index + base) with inflight requests at once and
// returns the rate in vectors/s.
func bulk(ctx context.Context, c *client.Client, ids []string, base uint64, o options) (float64, error) {
	start := time.Now()
	var next atomic.Int64
	errs := make(chan error, o.inflight)
	for range o.inflight {
		go func() {
			for {
				i := int(next.Add(int64(o.batch))) - o.batch
				if i >= len(ids) {
					errs <- nil
					return
				}
				var req client.UpsertRequest
				for j := i; j < min(i+o.batch, len(ids)); j++ {
					// The compact form (base64), as the import's stream carries vectors.
					req.Vectors = append(req.Vectors, client.Vector{ID: ids[j], VectorB64: client.EncodeB64(vec(o.dim, base+uint64(j)))})
				}
				if _, err := c.Upsert(ctx, &req); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
	for range o.inflight {
		err = errors.Join(err, <-errs)
	}
	return float64(len(ids)) / time.Since(start).Seconds(), err
}

func run(ctx context.Context, o options) error {
	bin := o.bin
	root := o.outDir
	if root == "" {
		var err error
		if root, err = os.MkdirTemp("", "bench-migrate"); err != nil {
			return err
		}
		defer os.RemoveAll(root)
	}
	if bin == "" {
		var err error
		if bin, err = proctest.Build(root); err != nil {
			return err
		}
	}
	moving := slots.Range(0, o.slotCount-1)
	inIDs := idsIn(moving, o.n, true, "v-")
	outIDs := idsIn(moving, o.n/4, false, "o-")
	logf := func(format string, args ...any) {
		if !o.json {
			fmt.Printf(format+"\n", args...)
		}
	}
	logf("migrate: %d vectors of dimension %d in slots 0-%d, load average %s", o.n, o.dim, o.slotCount-1, benchkit.LoadAvg())

	// 1. Baseline: the destination's own bulk upsert rate, on a fresh process.
	base, err := start(ctx, o, bin, filepath.Join(root, "baseline"))
	if err != nil {
		return err
	}
	baseRate, err := bulk(ctx, base.c, inIDs, 0, o)
	base.p.Kill()
	if err != nil {
		return fmt.Errorf("baseline upsert: %w", err)
	}
	logf("baseline: bulk upsert of %d vectors at %.0f vectors/s", len(inIDs), baseRate)

	// 2. Source and destination.
	src, err := start(ctx, o, bin, filepath.Join(root, "source"))
	if err != nil {
		return err
	}
	defer src.p.Kill()
	dst, err := start(ctx, o, bin, filepath.Join(root, "destination"))
	if err != nil {
		return err
	}
	defer dst.p.Kill()
	if _, err := src.c.SetSlots(ctx, &client.SlotsRequest{Slots: slots.All().String(), Epoch: 1}); err != nil {
		return err
	}
	if _, err := dst.c.SetSlots(ctx, &client.SlotsRequest{Slots: "", Epoch: 1}); err != nil {
		return err
	}
	if _, err := bulk(ctx, src.c, inIDs, 0, o); err != nil {
		return fmt.Errorf("loading the source: %w", err)
	}
	if _, err := bulk(ctx, src.c, outIDs, 1<<32, o); err != nil {
		return fmt.Errorf("loading the source: %w", err)
	}
	logf("source loaded: %d vectors in the slot set, %d outside", len(inIDs), len(outIDs))

	// 3. Load during the move.
	var epoch atomic.Uint64
	epoch.Store(1)
	owner := func(id string) *client.Client {
		if epoch.Load() >= 2 && moving.Has(slots.Of(id)) {
			return dst.c
		}
		return src.c
	}
	l := &load{acked: map[string]uint64{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range o.writers {
		wg.Go(func() { l.writer(ctx, o, w, owner, stop) })
	}
	for s := range o.searchers {
		wg.Go(func() { l.searcher(ctx, o, s, &epoch, moving, src.c, dst.c, stop) })
	}
	time.Sleep(time.Second)

	res := result{Dim: o.dim, BaselinePerSec: baseRate}
	t0 := time.Now()
	if _, err := dst.c.StartImport(ctx, &client.ImportRequest{ID: "bench", Slots: moving.String(), Source: src.p.URL(), Epoch: 1}); err != nil {
		return err
	}
	st, err := poll(ctx, dst.c, func(s *client.ImportStatus) bool { return s.Phase != client.ImportCopying })
	if err != nil {
		return err
	}
	copyTime := time.Since(t0)
	if st.Phase != client.ImportCatchingUp {
		return fmt.Errorf("import ended the copy in phase %s: %s", st.Phase, st.Message)
	}
	res.Vectors, res.CopySeconds, res.CopiesOfTheSlot = st.Copied, copyTime.Seconds(), st.Copies
	res.VectorsPerSec = float64(st.Copied) / copyTime.Seconds()
	res.MBPerSec = float64(st.Bytes) / 1e6 / copyTime.Seconds()
	res.Ratio = res.VectorsPerSec / baseRate
	exportSeq := st.ExportSeq
	logf("copied %d vectors (%.1f MB) in %.2fs: %.0f vectors/s, %.1f MB/s", st.Copied, float64(st.Bytes)/1e6, copyTime.Seconds(), res.VectorsPerSec, res.MBPerSec)

	// Catch up until the lag is small, then hand over in the operator's order.
	if _, err := poll(ctx, dst.c, func(s *client.ImportStatus) bool {
		last, err := src.c.Slots(ctx)
		return err == nil && s.AppliedSeq+o.maxLag >= last.Seq
	}); err != nil {
		return err
	}
	freeze := time.Now()
	fr, err := src.c.FreezeSlots(ctx, &client.SlotsRequest{Slots: moving.String(), Epoch: 1})
	if err != nil {
		return err
	}
	st, err = poll(ctx, dst.c, func(s *client.ImportStatus) bool { return s.AppliedSeq >= fr.Seq })
	if err != nil {
		return err
	}
	res.FreezeToCaught = float64(time.Since(freeze).Microseconds()) / 1000
	res.CatchUpRecords = st.AppliedSeq - exportSeq
	epoch.Store(2)
	if _, err := dst.c.FinishImport(ctx, "bench", 2); err != nil {
		return err
	}
	if _, err := src.c.SetSlots(ctx, &client.SlotsRequest{Slots: slots.All().Minus(moving).String(), Epoch: 2}); err != nil {
		return err
	}
	res.MoveSeconds = time.Since(t0).Seconds()
	res.FreezeWindowMs = float64(time.Since(freeze).Microseconds()) / 1000
	logf("handed over %.0f ms after the freeze (seq %d); move %.2fs", float64(time.Since(freeze).Microseconds())/1000, fr.Seq, res.MoveSeconds)
	time.Sleep(time.Second) // writes after the handover
	if _, err := src.c.DropSlots(ctx, &client.SlotsRequest{Slots: moving.String(), Epoch: 2}); err != nil {
		return err
	}
	close(stop)
	wg.Wait()
	if err := l.err(); err != nil {
		return err
	}

	// 4. Check.
	for id, seed := range l.acked {
		v, err := owner(id).Get(ctx, id, "")
		if err != nil {
			return fmt.Errorf("acknowledged %s not read back: %w", id, err)
		}
		if !slices.Equal(v.Vector, vec(o.dim, seed)) {
			return fmt.Errorf("acknowledged %s reads back another vector", id)
		}
	}
	for i, id := range inIDs {
		if i%max(1, len(inIDs)/2000) != 0 {
			continue // a sample: every id costs a request
		}
		if _, err := dst.c.Get(ctx, id, ""); err != nil {
			return fmt.Errorf("moved vector %s not on the destination: %w", id, err)
		}
	}
	res.LongestPauseMs = float64(l.longest.Load()) / 1e6
	res.LongestWriteMs = float64(l.slowest.Load()) / 1e6
	res.WritesAcked, res.WritesMoved, res.Searches = int64(len(l.acked)), l.moved.Load(), l.searches.Load()
	res.WritesAcked = l.writes.Load()
	res.LoadAverage = benchkit.LoadAvg()
	if o.json {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
		return nil
	}
	fmt.Printf("\n%-34s %12s\n", "figure", "value")
	for _, row := range []struct {
		name, value string
	}{
		{"vectors moved", strconv.FormatInt(res.Vectors, 10)},
		{"copy vectors/s", fmt.Sprintf("%.0f", res.VectorsPerSec)},
		{"copy MB/s", fmt.Sprintf("%.1f", res.MBPerSec)},
		{"destination bulk upsert vectors/s", fmt.Sprintf("%.0f", res.BaselinePerSec)},
		{"ratio (goal >= 0.8)", fmt.Sprintf("%.2f", res.Ratio)},
		{"whole move s", fmt.Sprintf("%.2f", res.MoveSeconds)},
		{"freeze to caught up ms", fmt.Sprintf("%.1f", res.FreezeToCaught)},
		{"freeze to handover ms", fmt.Sprintf("%.1f", res.FreezeWindowMs)},
		{"longest write pause ms (met moved)", fmt.Sprintf("%.1f", res.LongestPauseMs)},
		{"slowest write ms (all)", fmt.Sprintf("%.1f", res.LongestWriteMs)},
		{"writes acknowledged", strconv.FormatInt(res.WritesAcked, 10)},
		{"writes retried after moved", strconv.FormatInt(res.WritesMoved, 10)},
		{"merged searches, all checked", strconv.FormatInt(res.Searches, 10)},
		{"load average", res.LoadAverage},
	} {
		fmt.Printf("%-34s %12s\n", row.name, row.value)
	}
	return nil
}

// poll asks for the import's status every 20ms until ok or 30 minutes pass.
func poll(ctx context.Context, c *client.Client, ok func(*client.ImportStatus) bool) (*client.ImportStatus, error) {
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		st, err := c.ImportStatus(ctx, "bench")
		if err != nil {
			return nil, err
		}
		if st.Phase == client.ImportFailed || st.Phase == client.ImportCancelled {
			return nil, fmt.Errorf("import %s: %s", st.Phase, st.Message)
		}
		if ok(st) {
			return st, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, errors.New("import: no progress for 30 minutes")
}

// load is the traffic during the move and what it saw.
type load struct {
	mu       sync.Mutex
	acked    map[string]uint64 // id -> seed of its last acknowledged vector
	failure  error
	longest  atomic.Int64 // ns: the slowest acknowledged write that met a moved answer
	slowest  atomic.Int64 // ns: the slowest acknowledged write of all
	writes   atomic.Int64
	moved    atomic.Int64
	searches atomic.Int64
}

func (l *load) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failure == nil {
		l.failure = err
	}
}

func (l *load) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failure
}

// writer writes batches of its own ids (half in the moving slots) at o.writeRate.
func (l *load) writer(ctx context.Context, o options, w int, owner func(string) *client.Client, stop chan struct{}) {
	ids := append(idsIn(slots.Range(0, o.slotCount-1), 50, true, fmt.Sprintf("w%d-", w)),
		idsIn(slots.Range(0, o.slotCount-1), 50, false, fmt.Sprintf("w%d-", w))...)
	tick := time.NewTicker(time.Duration(float64(time.Second) / o.writeRate))
	defer tick.Stop()
	seed := uint64(w+1) << 40
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		// One id per write request: a router splits a batch by shard, and so do we.
		byOwner := map[*client.Client][]client.Vector{}
		seeds := map[string]uint64{}
		for j := range o.writeBatch {
			id := ids[(i*o.writeBatch+j)%len(ids)]
			seed++
			seeds[id] = seed
			c := owner(id)
			byOwner[c] = append(byOwner[c], client.Vector{ID: id, Vector: vec(o.dim, seed)})
		}
		for _, part := range byOwner {
			start := time.Now()
			metMoved := false
			for {
				pc := owner(part[0].ID)
				_, err := pc.Upsert(ctx, &client.UpsertRequest{Vectors: part})
				if err == nil {
					break
				}
				if !client.IsCode(err, client.CodeMoved) || time.Since(start) > o.pauseBudget {
					l.fail(fmt.Errorf("write during the move: %w", err))
					return
				}
				metMoved = true
				l.moved.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
			d := time.Since(start).Nanoseconds()
			if metMoved && d > l.longest.Load() {
				l.longest.Store(d)
			}
			if d > l.slowest.Load() {
				l.slowest.Store(d)
			}
			l.writes.Add(1)
			l.mu.Lock()
			for _, v := range part {
				l.acked[v.ID] = seeds[v.ID]
			}
			l.mu.Unlock()
		}
	}
}

// searcher asks both shards at the routing epoch, keeps each one's own slots and checks
// that no id comes twice.
func (l *load) searcher(ctx context.Context, o options, s int, epoch *atomic.Uint64, moving slots.Set, src, dst *client.Client, stop chan struct{}) {
	r := rand.New(rand.NewPCG(uint64(s), 99))
	for {
		select {
		case <-stop:
			return
		default:
		}
		e := epoch.Load()
		q := &client.SearchRequest{Vector: vec(o.dim, r.Uint64()), K: 10}
		seen := map[string]bool{}
		for _, c := range []*client.Client{src, dst} {
			resp, err := c.Search(client.WithEpoch(ctx, e), q)
			if err != nil {
				l.fail(fmt.Errorf("search during the move: %w", err))
				return
			}
			for _, h := range resp.Results {
				if (c == dst) != (e >= 2 && moving.Has(slots.Of(h.ID))) {
					continue // not this shard's slot at epoch e
				}
				if seen[h.ID] {
					l.fail(fmt.Errorf("epoch %d: %s answered twice", e, h.ID))
					return
				}
				seen[h.ID] = true
			}
		}
		l.searches.Add(1)
	}
}
