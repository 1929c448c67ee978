package wal

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SyncMode says when appended records reach stable storage.
type SyncMode uint8

const (
	// SyncAlways fsyncs before Append returns; concurrent appenders share one
	// write and one fsync (group commit). Nothing acknowledged is lost on a crash.
	SyncAlways SyncMode = iota
	// SyncInterval returns once the record is written to the page cache and
	// fsyncs on a timer: a machine crash loses up to Options.SyncInterval of
	// acknowledged records, a process crash loses nothing.
	SyncInterval
)

// String returns the name ParseSyncMode accepts.
func (m SyncMode) String() string {
	switch m {
	case SyncAlways:
		return "Always"
	case SyncInterval:
		return "Interval"
	}
	return fmt.Sprintf("SyncMode(%d)", uint8(m))
}

// ParseSyncMode parses "Always" or "Interval" (any case), the walSync values of
// the AnnIndex spec and the --wal-sync flag.
func ParseSyncMode(s string) (SyncMode, error) {
	switch strings.ToLower(s) {
	case "always":
		return SyncAlways, nil
	case "interval":
		return SyncInterval, nil
	}
	return 0, fmt.Errorf("parse sync mode %q: want Always or Interval", s)
}

// Options configure a Log. The zero value is SyncAlways with the defaults below.
type Options struct {
	Sync SyncMode
	// SyncInterval is the fsync period in SyncInterval mode; default 50ms.
	SyncInterval time.Duration
	// SegmentBytes is the size after which the log starts a new segment, the unit
	// TrimBefore removes; default 64 MiB.
	SegmentBytes int64

	noSync bool // tests only: skip every fsync
}

const (
	defaultSyncInterval = 50 * time.Millisecond
	defaultSegmentBytes = 64 << 20
)

// Record is one log entry. Data belongs to whoever received the Record.
type Record struct {
	Seq  uint64
	Data []byte
}

var (
	// ErrClosed is returned by every method of a closed Log.
	ErrClosed = errors.New("wal: log closed")
	// ErrCorrupt means a segment or snapshot failed its checks other than as a torn
	// tail; the error wrapping it names the file and offset.
	ErrCorrupt = errors.New("wal: corrupt")
	// ErrSeqGap is returned by AppendAt when seq is not the next one.
	ErrSeqGap = errors.New("wal: sequence gap")
	// ErrTrimmed means the records asked for are no longer in the log (trimmed, or
	// the log was Reset): the caller must re-bootstrap from a snapshot.
	ErrTrimmed = errors.New("wal: records trimmed")
	// ErrTooLarge is returned for a record over MaxRecordBytes.
	ErrTooLarge = errors.New("wal: record too large")
	// ErrLocked is returned by Open when another Log (in this process or another)
	// has the directory open.
	ErrLocked = errors.New("wal: directory in use by another log")
)

// lockName is the file in a log directory that an open Log holds locked.
const lockName = "LOCK"

// Stats are counters since Open, for metrics and for measuring group commit.
type Stats struct {
	Appends uint64 // records acknowledged
	Batches uint64 // write(2) calls of queued records
	Syncs   uint64 // fdatasync calls on segments
	Bytes   uint64 // record bytes written, framing included
}

// segment is the in-memory view of one segment file, guarded by Log.mu.
type segment struct {
	first uint64 // seq of its first record (the next seq when empty)
	last  uint64 // seq of its last acknowledged record; first-1 when empty
	size  int64  // bytes of acknowledged content, header included
	path  string
	index []indexEntry // sparse, ascending: where to start reading for a seq
}

type indexEntry struct {
	seq uint64
	off int64
}

// lookup returns the offset of the last indexed record at or before seq.
func (s *segment) lookup(seq uint64) int64 {
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].seq > seq })
	if i == 0 {
		return segHeaderSize
	}
	return s.index[i-1].off
}

// batch is the fate of a group of queued records: done is closed once they are
// written (and fsynced, per mode), with err telling how it went.
type batch struct {
	done chan struct{}
	err  error
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

// Log is a write-ahead log; see the package documentation.
type Log struct {
	dir  string
	opts Options
	dur  durability

	lock *os.File // holds the directory's advisory lock while open

	// ioMu serializes file I/O on the active segment (the writer's flush, Reset,
	// Close). fileMu serializes removing segment files (TrimBefore, Reset), so a
	// trim never deletes a segment Reset just created under the same name. Lock
	// order: ioMu, fileMu, mu.
	ioMu   sync.Mutex
	fileMu sync.Mutex
	active *os.File // written only under ioMu
	dirty  bool     // active has unsynced writes; under ioMu

	mu       sync.Mutex
	segs     []*segment // ascending; the last one is active
	gen      uint64     // bumped by Reset so readers notice the log changed under them
	nextSeq  uint64     // seq the next queued record gets
	pending  []byte     // queued frames, not yet written
	pendFrom uint64     // seq of the first frame in pending
	spare    []byte     // the other buffer of the double buffer
	cur      *batch     // the batch pending records belong to
	wantSync bool       // a Sync call waits on cur
	notify   chan struct{}
	closed   bool
	err      error // sticky: a failed write or fsync leaves the file in an unknown state

	lastSeq atomic.Uint64 // last acknowledged seq

	appends, batches, syncs, bytes atomic.Uint64

	kick    chan struct{} // wakes the writer; buffered 1
	quit    chan struct{} // closed by Close
	stopped chan struct{} // closed when the writer goroutine exits
}

// Open opens or creates the log in dir and recovers it: every record is checked, a
// torn tail of the last segment is cut off, and anything else that fails is
// ErrCorrupt with nothing changed.
func Open(dir string, opts Options) (*Log, error) {
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = defaultSyncInterval
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = defaultSegmentBytes
	}
	if opts.Sync != SyncAlways && opts.Sync != SyncInterval {
		return nil, fmt.Errorf("open wal %s: unknown sync mode %d", dir, opts.Sync)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open wal %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open wal %s: %w", dir, err)
	}
	l, err := open(dir, opts, lock)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return l, nil
}

func open(dir string, opts Options, lock *os.File) (*Log, error) {
	if err := removeTemps(dir); err != nil {
		return nil, fmt.Errorf("open wal %s: %w", dir, err)
	}
	l := &Log{
		lock:    lock,
		dir:     dir,
		opts:    opts,
		dur:     durability{off: opts.noSync},
		cur:     newBatch(),
		notify:  make(chan struct{}),
		kick:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	if seq, ok, err := pendingReset(dir); err != nil {
		return nil, fmt.Errorf("open wal %s: %w", dir, err)
	} else if ok {
		if _, err := resetDir(dir, seq, l.dur); err != nil {
			return nil, fmt.Errorf("open wal %s: finish interrupted %w", dir, err)
		}
	}
	segs, err := recoverDir(dir, l.dur)
	if err != nil {
		return nil, fmt.Errorf("open wal %s: %w", dir, err)
	}
	if len(segs) == 0 {
		s, err := createSegment(dir, 1, l.dur)
		if err != nil {
			return nil, fmt.Errorf("open wal %s: %w", dir, err)
		}
		segs = []*segment{s}
	}
	l.segs = segs
	last := segs[len(segs)-1]
	l.active, err = os.OpenFile(last.path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open wal %s: %w", dir, err)
	}
	if _, err := l.active.Seek(last.size, io.SeekStart); err != nil {
		l.active.Close()
		return nil, fmt.Errorf("open wal %s: %w", dir, err)
	}
	l.nextSeq = last.last + 1
	l.lastSeq.Store(last.last)
	go l.run()
	return l, nil
}

func removeTemps(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range ents {
		// Segment and reset-marker temps of a crashed creation.
		if strings.HasSuffix(e.Name(), tmpSuffix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("remove stale %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

func createSegment(dir string, first uint64, dur durability) (*segment, error) {
	name := segName(first)
	if err := createFileAtomic(dir, name, encodeSegHeader(first), dur); err != nil {
		return nil, err
	}
	return &segment{first: first, last: first - 1, size: segHeaderSize, path: filepath.Join(dir, name)}, nil
}

// Append queues data as the next record and returns its seq once the record is
// acknowledged per the sync mode. ctx is consulted only before the record is
// queued: once queued it will be written, and reporting a failure for a record that
// then becomes durable would let the caller's state diverge from its log.
func (l *Log) Append(ctx context.Context, data []byte) (uint64, error) {
	return l.append(ctx, 0, data)
}

// AppendAt appends a record under the primary's seq, for replicas. seq must be the
// next one (LastSeq()+1 when no other append is in flight), else ErrSeqGap.
func (l *Log) AppendAt(ctx context.Context, seq uint64, data []byte) error {
	if seq == 0 {
		return fmt.Errorf("wal: append at seq 0: %w", ErrSeqGap)
	}
	_, err := l.append(ctx, seq, data)
	return err
}

// append queues data under seq (0: the next one) and waits for its batch.
func (l *Log) append(ctx context.Context, seq uint64, data []byte) (uint64, error) {
	if len(data) > MaxRecordBytes {
		return 0, fmt.Errorf("wal: append %d bytes: %w", len(data), ErrTooLarge)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("wal: append: %w", err)
	}
	dataCRC := crc32.Checksum(data, crcTable)
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		return 0, ErrClosed
	case l.err != nil:
		err := l.err
		l.mu.Unlock()
		return 0, err
	case seq != 0 && seq != l.nextSeq:
		want := l.nextSeq
		l.mu.Unlock()
		return 0, fmt.Errorf("wal: append at seq %d, next is %d: %w", seq, want, ErrSeqGap)
	}
	seq = l.nextSeq
	l.nextSeq++
	if len(l.pending) == 0 {
		l.pendFrom = seq
	}
	l.pending = appendFrame(l.pending, seq, data, dataCRC)
	b := l.cur
	l.mu.Unlock()
	if err := l.await(b); err != nil {
		return 0, err
	}
	return seq, nil
}

// await wakes the writer and waits until it has written b.
func (l *Log) await(b *batch) error {
	select {
	case l.kick <- struct{}{}:
	default:
	}
	<-b.done
	return b.err
}

// run is the writer goroutine: it flushes whatever is queued when kicked, and in
// SyncInterval mode fsyncs on the timer.
func (l *Log) run() {
	defer close(l.stopped)
	var tick <-chan time.Time
	if l.opts.Sync == SyncInterval {
		t := time.NewTicker(l.opts.SyncInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-l.quit:
			return
		case <-l.kick:
			l.ioMu.Lock()
			n := l.flush(false)
			l.ioMu.Unlock()
			if n > 1 {
				// The appenders just released are likely to append again at once:
				// let them queue so the next fsync carries them all instead of
				// alternating one small and one large batch.
				runtime.Gosched()
			}
		case <-tick:
			l.ioMu.Lock()
			l.flush(true)
			l.ioMu.Unlock()
		}
	}
}

// flush writes the queued records with one write, fsyncs when the mode or forceSync
// (or a waiting Sync) asks, acknowledges them and rotates the segment when it is
// full. The caller holds ioMu.
func (l *Log) flush(forceSync bool) (records uint64) {
	l.mu.Lock()
	if l.err != nil {
		err := l.err
		b := l.cur
		l.cur = newBatch()
		l.pending = l.pending[:0]
		l.mu.Unlock()
		b.err = err
		close(b.done)
		return 0
	}
	buf, from, last, b := l.pending, l.pendFrom, l.nextSeq-1, l.cur
	doSync := forceSync || l.wantSync
	if len(buf) == 0 && !l.wantSync && !(forceSync && l.dirty) {
		// Nothing queued, nobody waiting, nothing to sync: an idle tick.
		l.mu.Unlock()
		return 0
	}
	l.pending, l.spare = l.spare[:0], nil
	l.cur = newBatch()
	l.wantSync = false
	seg := l.segs[len(l.segs)-1]
	off := seg.size
	l.mu.Unlock()

	var err error
	if len(buf) > 0 {
		if _, err = l.active.Write(buf); err == nil {
			l.dirty = true
			l.batches.Add(1)
			l.bytes.Add(uint64(len(buf)))
		} else {
			err = fmt.Errorf("wal: write %s: %w", seg.path, err)
		}
	}
	if err == nil && l.dirty && (doSync || l.opts.Sync == SyncAlways) {
		if err = l.dur.file(l.active); err != nil {
			err = fmt.Errorf("wal: sync %s: %w", seg.path, err)
		} else {
			l.dirty = false
			l.syncs.Add(1)
		}
	}
	if err != nil && len(buf) > 0 {
		// Best effort: cut the failed batch, never acknowledged, so that a reopen
		// does not find it. The log stays failed: after a failed write or fsync the
		// file's state is unknown until recovery reads it.
		_ = l.active.Truncate(off)
	}

	l.mu.Lock()
	if err != nil {
		l.err = err
	} else if len(buf) > 0 {
		if len(seg.index) == 0 || off-seg.index[len(seg.index)-1].off >= indexEvery {
			seg.index = append(seg.index, indexEntry{seq: from, off: off})
		}
		seg.size += int64(len(buf))
		seg.last = last
		l.lastSeq.Store(last)
		l.appends.Add(last - from + 1)
		close(l.notify)
		l.notify = make(chan struct{})
	}
	if cap(buf) <= 4<<20 {
		l.spare = buf[:0]
	}
	full := err == nil && seg.size >= l.opts.SegmentBytes
	l.mu.Unlock()
	b.err = err
	close(b.done)

	if full {
		if err := l.rotate(last + 1); err != nil {
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
		}
	}
	if err != nil || len(buf) == 0 {
		return 0
	}
	return last - from + 1
}

// rotate seals the active segment and starts a new one whose first record will be
// first. The caller holds ioMu.
func (l *Log) rotate(first uint64) error {
	if l.dirty {
		// Sealed segments are complete on disk: recovery treats a bad record in any
		// segment but the last as corruption.
		if err := l.dur.file(l.active); err != nil {
			return fmt.Errorf("wal: sync before rotate: %w", err)
		}
		l.dirty = false
		l.syncs.Add(1)
	}
	s, err := createSegment(l.dir, first, l.dur)
	if err != nil {
		return fmt.Errorf("wal: rotate: %w", err)
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY, 0)
	if err == nil {
		_, err = f.Seek(s.size, io.SeekStart)
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return fmt.Errorf("wal: rotate: %w", err)
	}
	if err := l.active.Close(); err != nil {
		f.Close()
		return fmt.Errorf("wal: rotate: close %w", err)
	}
	l.active = f
	l.mu.Lock()
	l.segs = append(l.segs, s)
	l.mu.Unlock()
	return nil
}

// LastSeq is the seq of the last acknowledged record; 0 when there is none.
func (l *Log) LastSeq() uint64 { return l.lastSeq.Load() }

// FirstSeq is the oldest seq still in the log, 0 when the log holds no record.
func (l *Log) FirstSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := l.segs[0].first
	if l.lastSeq.Load() < first {
		return 0
	}
	return first
}

// SizeBytes is the size of the segment files, headers included.
func (l *Log) SizeBytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, s := range l.segs {
		n += s.size
	}
	return n
}

// Stats returns the counters since Open.
func (l *Log) Stats() Stats {
	return Stats{Appends: l.appends.Load(), Batches: l.batches.Load(), Syncs: l.syncs.Load(), Bytes: l.bytes.Load()}
}

// Sync writes whatever is queued and fsyncs the active segment. In SyncAlways mode
// acknowledged records are already durable and Sync only matters for its error.
func (l *Log) Sync() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.wantSync = true
	b := l.cur
	l.mu.Unlock()
	return l.await(b)
}

// TrimBefore removes the sealed segments whose records all have seq < seq. After
// writing a snapshot, trim before the OLDEST kept snapshot's seq + 1 (see
// Snapshots), so that falling back to it still finds every later record. The active
// segment is never removed. Readers holding a removed segment open finish it.
func (l *Log) TrimBefore(seq uint64) error {
	l.fileMu.Lock()
	defer l.fileMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	n := 0
	for n+1 < len(l.segs) && l.segs[n+1].first <= seq {
		n++
	}
	drop := make([]*segment, n)
	copy(drop, l.segs[:n])
	l.segs = append(l.segs[:0:0], l.segs[n:]...)
	l.mu.Unlock()
	if n == 0 {
		return nil
	}
	// Oldest first, so a crash in the middle leaves a contiguous log.
	for _, s := range drop {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("wal: trim: %w", err)
		}
	}
	if err := l.dur.dir(l.dir); err != nil {
		return fmt.Errorf("wal: trim: %w", err)
	}
	return nil
}

// Reset drops every record and continues numbering after seq: the next Append gets
// seq+1 and AppendAt expects it. A replica calls it after loading a snapshot at seq
// that its log does not reach. Readers and followers of the old records get
// ErrTrimmed. A crash during Reset is finished by the next Open (see resetDir).
func (l *Log) Reset(seq uint64) error {
	l.ioMu.Lock()
	defer l.ioMu.Unlock()
	l.flush(false)
	l.fileMu.Lock()
	defer l.fileMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.err != nil {
		return l.err
	}
	if len(l.pending) > 0 {
		// Queued after the flush above under the old numbering: they can no longer
		// be written, so their appenders learn it.
		b := l.cur
		l.cur = newBatch()
		l.pending = l.pending[:0]
		b.err = fmt.Errorf("wal: append: log reset to seq %d: %w", seq, ErrSeqGap)
		close(b.done)
	}
	if err := l.active.Close(); err != nil {
		l.err = fmt.Errorf("wal: reset: %w", err)
		return l.err
	}
	s, err := resetDir(l.dir, seq, l.dur)
	var f *os.File
	if err == nil {
		f, err = os.OpenFile(s.path, os.O_WRONLY, 0)
	}
	if err == nil {
		_, err = f.Seek(s.size, io.SeekStart)
	}
	if err != nil {
		l.err = fmt.Errorf("wal: reset: %w", err)
		return l.err
	}
	l.active, l.dirty = f, false
	l.segs = []*segment{s}
	l.gen++
	l.nextSeq = seq + 1
	l.lastSeq.Store(seq)
	close(l.notify)
	l.notify = make(chan struct{})
	return nil
}

// Close writes and fsyncs what is queued, stops the writer and wakes followers
// (they return ErrClosed). Later calls return ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.mu.Unlock()
	close(l.quit)
	<-l.stopped
	l.ioMu.Lock()
	defer l.ioMu.Unlock()
	l.flush(true)
	l.mu.Lock()
	err := l.err
	l.mu.Unlock()
	if cerr := l.active.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("wal: close: %w", cerr)
	}
	l.lock.Close() // releases the directory lock
	return err
}
