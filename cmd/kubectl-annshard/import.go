package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/cmd/kubectl-annshard/vecfile"
	"github.com/annshard/annshard/shardserver/client"
)

// maxReasons is how many rejected rows are described; the rest are counted.
const maxReasons = 10

type importOptions struct {
	batch        int
	concurrency  int
	resume       bool
	checkpoint   string
	maxRejected  int
	precheck     bool
	idPrefix     string
	idStart      int64
	generateIDs  bool
	partition    string
	retries      int
	timeout      time.Duration
	progressTick time.Duration
	saveEvery    time.Duration // how often the checkpoint is saved after the first ack; 0 means every second
	noProgress   bool
	output       string
	vecOpts      vecfile.Options
}

func newImportCmd(g *globalOptions) *cobra.Command {
	o := &importOptions{}
	c := &cobra.Command{
		Use:   "import INDEX FILE...",
		Short: "Load vector files into an index through its router, with progress, resumable",
		Long: `import loads vectors from files into an index through its router: in batches (--batch-size),
several at once (--concurrency), with the index's write token. It shows a progress bar with
the rate and the time left on a terminal, and a line every --progress-interval otherwise, and
ends with the vectors per second and the rows it rejected.

Formats, by extension (or --format):
  .fvecs .bvecs    TEXMEX vectors (float32, uint8)
  .npy             a 2-D NumPy array, rows are vectors; float32, or any other real dtype
                   (float64, float16, integers: converted to float32, said at the start);
                   C or Fortran order, either byte order
  .jsonl .ndjson   JSON Lines: {"id": "a", "vector": [...], "partition": "p"} or bare arrays
  .parquet         a list-of-numbers column plus optional id and partition columns

Ids come from the file's id column (JSON Lines, Parquet: "id" unless --id-column names another)
or are generated: --id-prefix followed by the row number counted over all files in order from
--id-start (row 0 of the first file is "0"; of a second file of 1000 rows, "1000"). Give
--generate-ids to ignore an id column. A partition comes from the partition column or --partition.

Bad rows and files. Before anything is written, every file is read once and checked (turn that
off with --precheck=false for files too big to read twice): a file that cannot be read as a
whole (unknown format or dtype, truncated, corrupt, of another dimension than the index) stops
the import with exit code 3 and nothing written. So do bad rows (NaN or infinite components,
rows of another dimension, JSON that does not parse, empty or over-long ids, duplicate ids,
a zero vector in a Cosine index), unless --max-rejected allows that many: then the bad rows are
skipped, counted and described, and everything else is loaded. Without the precheck a bad row
found past --max-rejected stops the import part way (exit code 5; what was written stays).

Resuming. Every acknowledged batch is recorded in a checkpoint file (--checkpoint, by default
in your cache directory, one per index). If the import stops (Ctrl-C, a lost connection, a
failed batch), run the same command with --resume: it skips the acknowledged batches and sends
the others. Ids depend only on the row, so a batch sent twice writes the same vectors again:
no duplicates. The checkpoint is removed when an import completes.`,
		Example: `  # TEXMEX base vectors, ids 0..N-1 as in the ground-truth files
  kubectl annshard import products sift_base.fvecs

  # Embeddings from Parquet, ids from the "doc_id" column, tolerate up to 100 bad rows
  kubectl annshard import products part-*.parquet --id-column doc_id --max-rejected 100

  # Interrupted? Go on where it stopped
  kubectl annshard import products embeddings.npy --resume`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) < 2 {
				return codef(exitUsage, "import needs the index name and at least one file\nSee '%s --help'", c.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImport(cmd.Context(), g, o, args[0], args[1:])
		},
	}
	f := c.Flags()
	f.IntVar(&o.batch, "batch-size", 500, "vectors per upsert request")
	f.IntVar(&o.concurrency, "concurrency", 4, "upsert requests in flight at once")
	f.BoolVar(&o.resume, "resume", false, "skip the batches the checkpoint records as acknowledged")
	f.StringVar(&o.checkpoint, "checkpoint", "", "checkpoint file (default: <cache dir>/annshard/import-<namespace>-<index>.checkpoint.json)")
	f.IntVar(&o.maxRejected, "max-rejected", 0, "bad rows to skip before the import is refused (-1: any number)")
	f.BoolVar(&o.precheck, "precheck", true, "read and check every file before writing anything")
	f.StringVar(&o.idPrefix, "id-prefix", "", "prefix of generated ids")
	f.Int64Var(&o.idStart, "id-start", 0, "number of the first generated id")
	f.BoolVar(&o.generateIDs, "generate-ids", false, "generate ids even when the file has an id column")
	f.StringVar(&o.partition, "partition", "", "partition of every vector (rows without a partition column)")
	f.IntVar(&o.retries, "retries", 8, "attempts per batch when the router is unavailable or unreachable, with backoff")
	f.DurationVar(&o.timeout, "request-timeout", time.Minute, "timeout of one upsert request")
	f.DurationVar(&o.progressTick, "progress-interval", 10*time.Second, "how often a progress line is printed when stderr is not a terminal")
	f.BoolVar(&o.noProgress, "no-progress", false, "no progress bar or lines")
	f.StringVar(&o.vecOpts.VectorColumn, "vector-column", "", "vector column of JSON Lines or Parquet files (default: vector, embedding, emb, ...)")
	f.StringVar(&o.vecOpts.IDColumn, "id-column", "", "id column of JSON Lines or Parquet files (default: id, if present)")
	f.StringVar(&o.vecOpts.PartitionColumn, "partition-column", "", "partition column (default: partition, if present)")
	f.StringVar(&o.vecOpts.Format, "format", "", "read every file as this format, whatever its extension: "+vecfile.Formats)
	outputFlag(c, &o.output)
	return c
}

// importFile is one input file and what the import learned about it.
type importFile struct {
	path, abs string
	size      int64
	modTime   time.Time
	format    string
	rows      int64 // rows (lines for JSON Lines), for id numbering; -1 until known
	idOffset  int64 // generated id of row 0
	fileIDs   bool  // ids come from the file
	good      int64 // rows that pass the checks (precheck)
	rejected  map[int64]string
}

// rejects counts rejected rows and keeps the first reasons.
type rejects struct {
	mu      sync.Mutex
	n       int64
	reasons []string
}

func (r *rejects) add(file string, row int64, reason string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	if len(r.reasons) < maxReasons {
		r.reasons = append(r.reasons, fmt.Sprintf("%s row %d: %s", file, row, reason))
	}
	return r.n
}

func (r *rejects) count() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// importSummary is the end of an import, also its -o json|yaml.
type importSummary struct {
	Index            string   `json:"index"`
	Files            int      `json:"files"`
	Imported         int64    `json:"imported"`
	SkippedBatches   int      `json:"skippedBatches"`
	Rejected         int64    `json:"rejected"`
	RejectedReasons  []string `json:"rejectedReasons,omitempty"`
	Seconds          float64  `json:"seconds"`
	VectorsPerSecond float64  `json:"vectorsPerSecond"`
	Complete         bool     `json:"complete"`
	Checkpoint       string   `json:"checkpoint,omitempty"`
	Path             string   `json:"path"`
}

func (o *importOptions) validate() error {
	switch {
	case o.batch < 1 || o.batch > 10000:
		return codef(exitUsage, "--batch-size must be 1..10000 (the shard server's limit)")
	case o.concurrency < 1 || o.concurrency > 256:
		return codef(exitUsage, "--concurrency must be 1..256")
	case o.maxRejected < -1:
		return codef(exitUsage, "--max-rejected must be -1 (any) or at least 0")
	case o.retries < 1:
		return codef(exitUsage, "--retries must be at least 1")
	case o.idStart < 0:
		return codef(exitUsage, "--id-start must not be negative")
	case client.CheckPartition("--partition", o.partition) != nil:
		return codef(exitUsage, "%s", reasonOf(client.CheckPartition("--partition", o.partition)))
	}
	return checkOutput(o.output)
}

func (o *importOptions) idScheme() string {
	return fmt.Sprintf("generate=%v prefix=%q start=%d column=%q partition=%q", o.generateIDs, o.idPrefix, o.idStart, o.vecOpts.IDColumn, o.partition)
}

func runImport(ctx context.Context, g *globalOptions, o *importOptions, index string, paths []string) error {
	if err := o.validate(); err != nil {
		return err
	}
	s, err := newSession(g)
	if err != nil {
		return err
	}
	idx, err := s.index(ctx, index)
	if err != nil {
		return err
	}
	env := importEnv{idx: idx, out: g.streams.Out, errOut: g.streams.ErrOut, logf: g.logf,
		connect: func() (*routerPool, error) {
			token, err := s.writeToken(ctx, index)
			if err != nil {
				return nil, err
			}
			return s.routers(ctx, index, token)
		}}
	return importFiles(ctx, o, env, paths)
}

// importEnv is what an import needs from the cluster: the index, and a way to its
// routers (connect, called once the files' headers were read).
type importEnv struct {
	idx         *annv1alpha1.AnnIndex
	connect     func() (*routerPool, error)
	out, errOut io.Writer
	logf        func(int, string, ...any)
}

func importFiles(ctx context.Context, o *importOptions, env importEnv, paths []string) error {
	idx, errOut := env.idx, env.errOut
	index := idx.Name
	dim := int(idx.Spec.Dimension)
	o.vecOpts.Dim = dim

	// Every file's header first: a wrong file stops the import before anything is read.
	files, err := openFiles(paths, o, dim, index, errOut)
	if err != nil {
		return err
	}
	pool, err := env.connect()
	if err != nil {
		return err
	}

	cpPath := o.checkpoint
	if cpPath == "" {
		cpPath = defaultCheckpointPath(idx.Namespace, index)
	}
	cp := newCheckpoint(cpPath, idx.Namespace, index, o.batch, o.idScheme(), files)
	if o.resume {
		if cp, err = loadCheckpoint(cpPath, cp); err != nil {
			return withCode(exitUsage, err)
		}
		fmt.Fprintf(errOut, "Resuming from %s: %d batches already acknowledged.\n", cpPath, cp.ackedBatches())
	}

	rej := &rejects{}
	v := newRowValidator(o, idx)
	if o.precheck {
		if err := precheck(ctx, files, o, v, rej, errOut); err != nil {
			return err
		}
		if o.maxRejected >= 0 && rej.count() > int64(o.maxRejected) {
			return codef(exitBadInput, "%d bad rows (--max-rejected is %d); nothing was written:\n  %s%s",
				rej.count(), o.maxRejected, joinLines(rej.reasons), moreReasons(rej))
		}
		rej.n, rej.reasons = 0, nil // counted again as the import skips them
	} else if err := countRows(files); err != nil {
		return withCode(exitBadInput, err)
	}
	assignIDOffsets(files, o.idStart)

	imp := &importer{o: o, files: files, cp: cp, rej: rej, pool: pool, validate: v, log: env.logf}
	sum := imp.run(ctx, index, errOut)
	sum.Path = pool.desc
	if o.output != "" {
		if err := printData(env.out, o.output, sum); err != nil {
			return err
		}
	} else {
		printSummary(env.out, sum)
	}
	return imp.err
}

func joinLines(lines []string) string {
	var b bytes.Buffer
	for i, l := range lines {
		if i > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(l)
	}
	return b.String()
}

func moreReasons(r *rejects) string {
	if more := r.n - int64(len(r.reasons)); more > 0 {
		return fmt.Sprintf("\n  ... and %d more", more)
	}
	return ""
}

// openFiles reads every file's header and checks its dimension against the index.
func openFiles(paths []string, o *importOptions, dim int, index string, errOut io.Writer) ([]*importFile, error) {
	var files []*importFile
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, withCode(exitBadInput, err)
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, withCode(exitBadInput, err)
		}
		r, err := vecfile.Open(p, o.vecOpts)
		if err != nil {
			return nil, withCode(exitBadInput, err)
		}
		f := &importFile{path: p, abs: abs, size: st.Size(), modTime: st.ModTime(), format: r.Format(), rows: r.Rows(),
			fileIDs: r.HasIDs() && !o.generateIDs}
		hasParts := r.HasPartitions()
		rdim := r.Dim()
		r.Close()
		if rdim != 0 && rdim != dim {
			return nil, codef(exitBadInput, "%s: vectors of dimension %d, index %s has dimension %d", p, rdim, index, dim)
		}
		if hasParts && o.partition != "" {
			return nil, codef(exitUsage, "%s has a partition column and --partition is given: use one or the other", p)
		}
		rows := "rows counted as it is read"
		if f.rows >= 0 {
			rows = fmt.Sprintf("%d rows", f.rows)
		}
		ids := "generated ids"
		if f.fileIDs {
			ids = "ids from the file"
		}
		fmt.Fprintf(errOut, "%s: %s, %s, %s\n", p, f.format, rows, ids)
		files = append(files, f)
	}
	return files, nil
}

// rowValidator applies the servers' own rules (client.CheckID, client.Schema.Vector) to
// each row, so a bad row is rejected alone here instead of failing its whole batch there.
type rowValidator struct {
	schema client.Schema
}

func newRowValidator(o *importOptions, idx *annv1alpha1.AnnIndex) *rowValidator {
	return &rowValidator{schema: client.Schema{Dimension: int(idx.Spec.Dimension), Metric: string(idx.Spec.Metric)}}
}

// check returns why the record cannot be stored, or "". id is the id it will get.
func (v *rowValidator) check(rec *vecfile.Record, id string) string {
	if err := client.CheckID("id", id); err != nil {
		return reasonOf(err)
	}
	if err := client.CheckPartition("partition", rec.Partition); err != nil {
		return reasonOf(err)
	}
	if _, err := v.schema.Vector("", rec.Vector, ""); err != nil {
		return reasonOf(err)
	}
	return ""
}

// reasonOf is an API error's message without its code ("id: empty").
func reasonOf(err error) string {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Message
	}
	return err.Error()
}

// idOf is the id a row is stored under.
func (f *importFile) idOf(o *importOptions, rec *vecfile.Record) string {
	if f.fileIDs {
		return rec.ID
	}
	return o.idPrefix + strconv.FormatInt(f.idOffset+rec.Row, 10)
}

// scan reads one file and calls fn with every row and why it is rejected ("" if good).
func scan(ctx context.Context, f *importFile, o *importOptions, fn func(rec *vecfile.Record, reject string) error) error {
	r, err := vecfile.Open(f.path, o.vecOpts)
	if err != nil {
		return withCode(exitBadInput, err)
	}
	defer r.Close()
	for n := 0; ; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		var rec vecfile.Record
		err := r.Next(&rec)
		if err == io.EOF {
			return nil
		}
		var re *vecfile.RowError
		switch {
		case errors.As(err, &re):
			if err := fn(&rec, re.Reason); err != nil {
				return err
			}
			continue
		case err != nil:
			return codef(exitBadInput, "%s: %v", f.path, err)
		}
		if rec.Partition == "" {
			rec.Partition = o.partition
		}
		if err := fn(&rec, ""); err != nil {
			return err
		}
	}
}

// precheck reads every file once: rows, bad rows and duplicate ids, before any write.
func precheck(ctx context.Context, files []*importFile, o *importOptions, v *rowValidator, rej *rejects, errOut io.Writer) error {
	start := time.Now()
	seed := maphash.MakeSeed()
	type idAt struct {
		hash uint64
		file int
		row  int64
	}
	var ids []idAt
	var total int64
	for fi, f := range files {
		f.rejected = map[int64]string{}
		var lastRow int64 = -1
		err := scan(ctx, f, o, func(rec *vecfile.Record, reject string) error {
			lastRow = rec.Row
			if reject == "" && f.fileIDs {
				reject = v.check(rec, rec.ID)
			} else if reject == "" {
				reject = v.check(rec, "0")
			}
			if reject != "" {
				f.rejected[rec.Row] = reject
				rej.add(f.path, rec.Row, reject)
				return nil
			}
			f.good++
			if f.fileIDs {
				ids = append(ids, idAt{maphash.String(seed, rec.ID), fi, rec.Row})
			}
			return nil
		})
		if err != nil {
			return err
		}
		if f.rows < 0 {
			f.rows = lastRow + 1
		}
		total += f.good
	}
	// Duplicate ids: with concurrent batches, which of two rows of one id wins would be
	// up to chance, so both are a problem; the later one is rejected. Ids are compared by
	// a 64-bit hash (a false match is as likely as 2^-64 per pair), keeping memory at
	// 16 bytes per row whatever the ids' length.
	slices.SortFunc(ids, func(a, b idAt) int {
		if a.hash != b.hash {
			if a.hash < b.hash {
				return -1
			}
			return 1
		}
		if a.file != b.file {
			return a.file - b.file
		}
		return int(a.row - b.row)
	})
	for i := 1; i < len(ids); i++ {
		if ids[i].hash == ids[i-1].hash {
			first := ids[i-1]
			for i < len(ids) && ids[i].hash == first.hash {
				d := ids[i]
				reason := fmt.Sprintf("duplicate id (also at %s row %d)", files[first.file].path, first.row)
				files[d.file].rejected[d.row] = reason
				files[d.file].good--
				rej.add(files[d.file].path, d.row, reason)
				total--
				i++
			}
		}
	}
	fmt.Fprintf(errOut, "Checked %d rows in %.1fs: %d to import, %d rejected.\n", total+rej.count(), time.Since(start).Seconds(), total, rej.count())
	return nil
}

// countRows learns the row count of files whose header does not say it (JSON Lines), so
// that generated ids can be numbered across files without the precheck.
func countRows(files []*importFile) error {
	for _, f := range files {
		if f.rows >= 0 {
			continue
		}
		fh, err := os.Open(f.path)
		if err != nil {
			return err
		}
		var n int64
		var last byte = '\n'
		buf := make([]byte, 1<<20)
		for {
			k, err := fh.Read(buf)
			n += int64(bytes.Count(buf[:k], []byte{'\n'}))
			if k > 0 {
				last = buf[k-1]
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				fh.Close()
				return err
			}
		}
		fh.Close()
		if last != '\n' {
			n++
		}
		f.rows = n
	}
	return nil
}

func assignIDOffsets(files []*importFile, start int64) {
	off := start
	for _, f := range files {
		f.idOffset = off
		off += f.rows
	}
}

// batch is one upsert: rows [number*size, (number+1)*size) of one file, minus rejected ones.
type batch struct {
	file    int
	number  int64
	vectors []client.Vector
}

// importer sends the batches and records their acknowledgements.
type importer struct {
	o        *importOptions
	files    []*importFile
	cp       *checkpoint
	rej      *rejects
	pool     *routerPool
	validate *rowValidator
	log      func(int, string, ...any)

	sent    atomic.Int64 // vectors acknowledged in this run
	skipped int          // batches skipped as already acknowledged
	err     error
}

func (imp *importer) run(ctx context.Context, index string, errOut io.Writer) importSummary {
	o := imp.o
	total := imp.toSend()
	prog := newProgress(errOut, total, o.progressTick, o.noProgress)
	start := time.Now()

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	eg, gctx := errgroup.WithContext(ctx)
	batches := make(chan batch, o.concurrency)
	var stopErr error // why the producer stopped early (too many bad rows)
	eg.Go(func() error {
		defer close(batches)
		err := imp.produce(gctx, batches)
		if err != nil && !errors.Is(err, context.Canceled) {
			stopErr = err
		}
		return err
	})
	firstAck := make(chan struct{})
	var firstOnce sync.Once
	for range o.concurrency {
		eg.Go(func() error {
			for b := range batches {
				if err := imp.send(gctx, b); err != nil {
					return err
				}
				imp.cp.ack(b.file, b.number)
				firstOnce.Do(func() { close(firstAck) })
				imp.sent.Add(int64(len(b.vectors)))
				prog.add(int64(len(b.vectors)))
			}
			return nil
		})
	}
	// The checkpoint is saved at the first acknowledged batch, then every second while
	// batches are acknowledged: an import killed (not interrupted) in its first second
	// can be resumed too.
	saveDone := make(chan struct{})
	go func() {
		defer close(saveDone)
		every := o.saveEvery
		if every <= 0 {
			every = time.Second
		}
		t := time.NewTicker(every)
		defer t.Stop()
		first := firstAck
		for {
			select {
			case <-gctx.Done():
				return
			case <-first:
				first = nil
			case <-t.C:
			}
			if err := imp.cp.saveIfDirty(); err != nil {
				imp.log(0, "%v", err)
			}
		}
	}()
	err := eg.Wait()
	cancel()
	<-saveDone
	prog.finish()
	elapsed := time.Since(start)

	sum := importSummary{Index: index, Files: len(imp.files), Imported: imp.sent.Load(), SkippedBatches: imp.skipped,
		Rejected: imp.rej.count(), RejectedReasons: imp.rej.reasons, Seconds: elapsed.Seconds()}
	if elapsed > 0 {
		sum.VectorsPerSecond = float64(sum.Imported) / elapsed.Seconds()
	}
	if err == nil {
		sum.Complete = true
		if rerr := imp.cp.remove(); rerr != nil {
			imp.log(0, "removing checkpoint: %v", rerr)
		}
		return sum
	}
	if serr := imp.cp.save(); serr != nil {
		fmt.Fprintf(errOut, "warning: %v\n", serr)
	}
	sum.Checkpoint = imp.cp.path
	switch {
	case stopErr != nil && exitCodeOf(stopErr) == exitBadInput && imp.sent.Load() == 0 && imp.cp.ackedBatches() == 0:
		imp.err = stopErr
	case stopErr != nil:
		imp.err = codef(exitIncomplete, "%v\n%d vectors were written; fix the input and run again with --resume (checkpoint %s)", stopErr, sum.Imported, imp.cp.path)
	case parent.Err() != nil:
		imp.err = codef(exitIncomplete, "interrupted after %d vectors; run the same command with --resume to go on (checkpoint %s)", sum.Imported, imp.cp.path)
	default:
		imp.err = codef(exitIncomplete, "%v\n%d vectors were written; run the same command with --resume to go on (checkpoint %s)", err, sum.Imported, imp.cp.path)
	}
	return sum
}

// toSend is the number of vectors this run will send, for the progress bar: exact after
// the precheck, an estimate (rows less acknowledged batches) without it.
func (imp *importer) toSend() int64 {
	var n int64
	for fi, f := range imp.files {
		rows := f.rows
		if f.rejected != nil {
			rows = f.good
		}
		acked := int64(len(imp.cp.acked[fi])) * int64(imp.o.batch)
		n += max(0, rows-acked)
	}
	return n
}

// produce reads the files in order and hands out the batches not yet acknowledged.
func (imp *importer) produce(ctx context.Context, out chan<- batch) error {
	o := imp.o
	for fi, f := range imp.files {
		cur := batch{file: fi, number: -1}
		seen := map[string]int64{} // ids in the current batch (without the precheck)
		flush := func() error {
			if cur.number < 0 {
				return nil
			}
			if imp.cp.isAcked(fi, cur.number) {
				imp.skipped++
			} else if len(cur.vectors) > 0 {
				select {
				case out <- cur:
				case <-ctx.Done():
					return ctx.Err()
				}
			} else {
				imp.cp.ack(fi, cur.number) // every row of it rejected: nothing to send
			}
			cur = batch{file: fi, number: -1}
			clear(seen)
			return nil
		}
		err := scan(ctx, f, o, func(rec *vecfile.Record, reject string) error {
			if b := rec.Row / int64(o.batch); b != cur.number {
				if err := flush(); err != nil {
					return err
				}
				cur.number = b
			}
			if imp.cp.isAcked(fi, cur.number) {
				return nil
			}
			id := f.idOf(o, rec)
			if reject == "" && f.rejected != nil {
				reject = f.rejected[rec.Row] // duplicate ids found by the precheck
			}
			if reject == "" {
				reject = imp.validate.check(rec, id)
			}
			if reject == "" && f.fileIDs {
				if prev, dup := seen[id]; dup {
					reject = fmt.Sprintf("duplicate id (also at row %d)", prev)
				}
				seen[id] = rec.Row
			}
			if reject != "" {
				if n := imp.rej.add(f.path, rec.Row, reject); o.maxRejected >= 0 && n > int64(o.maxRejected) {
					return codef(exitBadInput, "%s row %d: %s (more than --max-rejected %d bad rows)", f.path, rec.Row, reject, o.maxRejected)
				}
				return nil
			}
			cur.vectors = append(cur.vectors, client.Vector{ID: id, VectorB64: client.EncodeB64(rec.Vector), Partition: rec.Partition})
			return nil
		})
		if err != nil {
			return err
		}
		if err := flush(); err != nil {
			return err
		}
	}
	return nil
}

// send upserts one batch, retrying with backoff while the router is unavailable or
// unreachable; an answer that says the batch itself is wrong is not retried.
func (imp *importer) send(ctx context.Context, b batch) error {
	req := &client.UpsertRequest{Vectors: b.vectors}
	backoff := 250 * time.Millisecond
	var last error
	for attempt := 1; attempt <= imp.o.retries; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, imp.o.timeout)
		_, err := imp.pool.pick().Upsert(rctx, req)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		last = err
		var ae *client.APIError
		if errors.As(err, &ae) {
			switch ae.Code {
			case client.CodeUnauthorized:
				return fmt.Errorf("the router refused the write token (%v): is --token the one in Secret %s-token?", err, imp.cp.Index)
			case client.CodeInvalidArgument, client.CodePayloadTooLarge:
				return fmt.Errorf("%s batch %d (rows %d-%d) was refused: %w", imp.files[b.file].path, b.number,
					b.number*int64(imp.o.batch), (b.number+1)*int64(imp.o.batch)-1, err)
			}
		}
		imp.log(2, "%s batch %d, attempt %d: %v; retrying in %v", imp.files[b.file].path, b.number, attempt, err, backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
	return fmt.Errorf("%s batch %d failed %d times, last: %w", imp.files[b.file].path, b.number, imp.o.retries, last)
}

func printSummary(w io.Writer, s importSummary) {
	state := "Imported"
	if !s.Complete {
		state = "Stopped after"
	}
	fmt.Fprintf(w, "%s %d vectors into %s from %d file(s) in %.1fs: %.0f vectors/s (through %s).\n",
		state, s.Imported, s.Index, s.Files, s.Seconds, s.VectorsPerSecond, s.Path)
	if s.SkippedBatches > 0 {
		fmt.Fprintf(w, "Skipped %d batches acknowledged by an earlier run.\n", s.SkippedBatches)
	}
	if s.Rejected > 0 {
		fmt.Fprintf(w, "Rejected %d rows:\n", s.Rejected)
		for _, r := range s.RejectedReasons {
			fmt.Fprintf(w, "  %s\n", r)
		}
		if more := s.Rejected - int64(len(s.RejectedReasons)); more > 0 {
			fmt.Fprintf(w, "  ... and %d more\n", more)
		}
	} else {
		fmt.Fprintln(w, "Rejected 0 rows.")
	}
}
