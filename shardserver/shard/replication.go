package shard

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/wal"
)

// Replication protocol. GET /v1/replication/snapshot streams the payload of the
// primary's newest snapshot, with its sequence number in the SeqHeader. GET
// /v1/replication/wal?from=SEQ answers 410 Gone when SEQ is no longer in the log (the
// replica must bootstrap again), else streams frames until the client goes away. Both
// name the primary's history in the HistoryHeader: a replica whose own history is
// another bootstraps from the snapshot (which carries the id it adopts) instead of
// following records of a history it does not have (see history.go). The frames:
//
//	seq:u64 len:u32 crc32c(data):u32 data
//
// A frame with len 0xFFFFFFFF is a heartbeat, sent every heartbeatEvery, whose seq is
// the primary's last sequence number: it measures lag and proves the stream alive.
const (
	SeqHeader      = client.SeqHeader
	heartbeatLen   = 0xFFFFFFFF
	heartbeatEvery = 500 * time.Millisecond
	// streamSilence is how long a replica waits without any frame before it assumes
	// the primary is gone and reconnects.
	streamSilence = 5 * time.Second
	frameHeader   = 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errNeedBootstrap means the primary no longer has the records the replica needs, or
// they are of another history than the replica's.
var errNeedBootstrap = errors.New("the replica must bootstrap from the primary's snapshot")

// streamContext ends when the request ends or the server starts shutting down.
func (s *Server) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.streams, cancel)
	return ctx, func() { stop(); cancel() }
}

func (s *Server) handleReplSnapshot(w http.ResponseWriter, r *http.Request) {
	rc, seq, _, err := s.store.openSnapshot()
	if err != nil {
		writeError(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(SeqHeader, strconv.FormatUint(seq, 10))
	w.Header().Set(HistoryHeader, s.store.History().String())
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		// Break the connection so the replica cannot take a cut stream for a whole one.
		slog.Warn("Snapshot stream failed", "seq", seq, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// parseFrom reads ?from=SEQ and answers 410 when the log no longer reaches back to it
// (or never reached it: a replica ahead of this log must bootstrap again too).
func (s *Server) parseFrom(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	from, err := strconv.ParseUint(r.URL.Query().Get("from"), 10, 64)
	if err != nil || from == 0 {
		writeError(w, invalid("from must be a sequence number >= 1"))
		return 0, false
	}
	log := s.store.Log()
	first, last := log.FirstSeq(), log.LastSeq()
	if (first != 0 && from < first) || (first == 0 && from <= last) || from > last+1 {
		writeJSON(w, http.StatusGone, client.ErrorBody{Error: client.APIError{Code: client.CodeNotFound,
			Message: fmt.Sprintf("records from %d are not in the log (first %d, last %d): bootstrap from the snapshot", from, first, last)}})
		return 0, false
	}
	return from, true
}

// frameWriter serialises frames and heartbeats onto one streaming response.
type frameWriter struct {
	mu  sync.Mutex
	bw  *bufio.Writer
	rc  *http.ResponseController
	buf [frameHeader]byte
}

func newFrameWriter(w http.ResponseWriter) *frameWriter {
	return &frameWriter{bw: bufio.NewWriterSize(w, 64<<10), rc: http.NewResponseController(w)}
}

func (f *frameWriter) write(seq uint64, data []byte, flush bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	binary.LittleEndian.PutUint64(f.buf[0:], seq)
	if data == nil {
		binary.LittleEndian.PutUint32(f.buf[8:], heartbeatLen)
		binary.LittleEndian.PutUint32(f.buf[12:], 0)
	} else {
		binary.LittleEndian.PutUint32(f.buf[8:], uint32(len(data)))
		binary.LittleEndian.PutUint32(f.buf[12:], crc32.Checksum(data, castagnoli))
	}
	if _, err := f.bw.Write(f.buf[:]); err != nil {
		return err
	}
	if _, err := f.bw.Write(data); err != nil {
		return err
	}
	if !flush {
		return nil
	}
	if err := f.bw.Flush(); err != nil {
		return err
	}
	return f.rc.Flush()
}

// startHeartbeats calls beat now and every heartbeatEvery until ctx ends; a failed
// beat cancels the stream. The returned stop cancels and waits for the goroutine: a
// streaming handler calls it before returning, as the ResponseWriter is dead after that.
func startHeartbeats(ctx context.Context, cancel context.CancelFunc, beat func() error) (stop func()) {
	return startHeartbeatsEvery(ctx, cancel, heartbeatEvery, beat)
}

// startHeartbeatsEvery is startHeartbeats at another pace.
func startHeartbeatsEvery(ctx context.Context, cancel context.CancelFunc, every time.Duration, beat func() error) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if err := beat(); err != nil {
				cancel()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}

func (s *Server) handleReplWAL(w http.ResponseWriter, r *http.Request) {
	from, ok := s.parseFrom(w, r)
	if !ok {
		return
	}
	ctx, cancel := s.streamContext(r)
	defer cancel()
	log := s.store.Log()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(SeqHeader, strconv.FormatUint(log.LastSeq(), 10))
	w.Header().Set(HistoryHeader, s.store.History().String())
	w.WriteHeader(http.StatusOK)
	fw := newFrameWriter(w)
	defer startHeartbeats(ctx, cancel, func() error { return fw.write(log.LastSeq(), nil, true) })()
	err := log.Follow(ctx, from, func(rec wal.Record) error {
		// Flush when caught up, so a burst goes out in big writes and a lone record at once.
		return fw.write(rec.Seq, rec.Data, rec.Seq >= log.LastSeq())
	})
	if err != nil && ctx.Err() == nil {
		slog.Info("Replication stream ended", "from", from, "err", err)
	}
}

// replicator makes a read replica follow its primary: bootstrap from the snapshot when
// needed, then apply the WAL stream in order, reconnecting with backoff.
type replicator struct {
	primary     atomic.Pointer[string] // base URL; "" until known (Kubernetes mode)
	token       string
	store       *Store
	maxLag      uint64
	hc          *http.Client
	primaryLast atomic.Uint64
	live        atomic.Bool  // a stream is open and has delivered a heartbeat
	lostAt      atomic.Int64 // unix ns when a live stream last ended; 0 before any
	lossGrace   time.Duration
	mu          sync.Mutex
	lastErr     error
}

func newReplicator(primaryURL, token string, store *Store, maxLag uint64, lossGrace time.Duration) *replicator {
	hc := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 30 * time.Second, IdleConnTimeout: time.Minute}}
	rp := &replicator{token: token, store: store, maxLag: maxLag, lossGrace: lossGrace, hc: hc}
	rp.setPrimary(primaryURL)
	return rp
}

// setPrimary points the replica at a new primary address; a stream open to the old one
// ends on its own when that pod goes away.
func (rp *replicator) setPrimary(url string) { rp.primary.Store(&url) }

// primaryURL is the primary's base URL, "" while it is not known.
func (rp *replicator) primaryURL() string { return *rp.primary.Load() }

func (rp *replicator) lag() uint64 {
	last, applied := rp.primaryLast.Load(), rp.store.Applied()
	if last > applied {
		return last - applied
	}
	return 0
}

// ready: streaming and within maxLag of the primary, or, for lossGrace after a live
// stream ended, within maxLag of where the primary was. A primary restart (a rolling
// update, a pod deletion) would otherwise take every replica of the shard out of service
// at once, and reads with it, though their data is as fresh as anything can be while
// the primary is away.
func (rp *replicator) ready() bool {
	if rp.lag() > rp.maxLag {
		return false
	}
	if rp.live.Load() {
		return true
	}
	lost := rp.lostAt.Load()
	return lost != 0 && time.Since(time.Unix(0, lost)) < rp.lossGrace
}

func (rp *replicator) status() string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if !rp.live.Load() {
		return fmt.Sprintf("not streaming from the primary %s (last error: %v)", rp.primaryURL(), rp.lastErr)
	}
	return fmt.Sprintf("%d records behind the primary, the bound is %d", rp.lag(), rp.maxLag)
}

// run follows the primary until ctx ends.
func (rp *replicator) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		before := rp.store.Applied()
		err := rp.follow(ctx)
		if rp.live.Swap(false) {
			rp.lostAt.Store(time.Now().UnixNano())
		}
		if errors.Is(err, errNeedBootstrap) {
			slog.Info("Bootstrapping from the primary", "primary", rp.primaryURL(), "applied", rp.store.Applied())
			err = rp.bootstrap(ctx)
			if err == nil {
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		rp.mu.Lock()
		rp.lastErr = err
		rp.mu.Unlock()
		if rp.store.Applied() > before {
			backoff = 50 * time.Millisecond
		}
		slog.Info("Replication interrupted", "err", err, "retry", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (rp *replicator) get(ctx context.Context, path string) (*http.Response, error) {
	base := rp.primaryURL()
	if base == "" {
		return nil, errors.New("the primary's address is not known yet")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	if rp.token != "" {
		req.Header.Set("Authorization", "Bearer "+rp.token)
	}
	resp, err := rp.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	return resp, nil
}

// bootstrap replaces the local state with the primary's newest snapshot.
func (rp *replicator) bootstrap(ctx context.Context) error {
	resp, err := rp.get(ctx, "/v1/replication/snapshot")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET snapshot: HTTP %d", resp.StatusCode)
	}
	seq, err := strconv.ParseUint(resp.Header.Get(SeqHeader), 10, 64)
	if err != nil {
		return fmt.Errorf("GET snapshot: bad %s header: %w", SeqHeader, err)
	}
	if err := rp.store.Replace(seq, resp.Body); err != nil {
		return fmt.Errorf("installing snapshot %d: %w", seq, err)
	}
	slog.Info("Bootstrapped from the primary", "seq", seq, "vectors", rp.store.Len(), "history", rp.store.History().String())
	return nil
}

// follow streams and applies the primary's WAL after the last applied record.
func (rp *replicator) follow(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	from := rp.store.Applied() + 1
	resp, err := rp.get(ctx, "/v1/replication/wal?from="+strconv.FormatUint(from, 10))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusGone:
		return errNeedBootstrap
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET wal from %d: HTTP %d: %s", from, resp.StatusCode, b)
	}
	history, err := parseHistoryID(resp.Header.Get(HistoryHeader))
	if err != nil {
		return fmt.Errorf("GET wal from %d: bad %s header: %w", from, HistoryHeader, err)
	}
	if own := rp.store.History(); history != own {
		return fmt.Errorf("%w: the primary's history is %s, this replica's %s", errNeedBootstrap, history, own)
	}
	// A silent stream (a primary that vanished without closing) is cut after streamSilence.
	watchdog := time.AfterFunc(streamSilence, cancel)
	defer watchdog.Stop()
	br := bufio.NewReaderSize(resp.Body, 256<<10)
	var head [frameHeader]byte
	for {
		seq, data, err := readFrame(br, &head)
		if err != nil {
			return err
		}
		watchdog.Reset(streamSilence)
		if data == nil {
			rp.primaryLast.Store(seq)
			rp.live.Store(true)
			continue
		}
		if err := rp.store.ApplyReplicated(ctx, seq, data); err != nil {
			if errors.Is(err, errGap) {
				return fmt.Errorf("%w: %w", errNeedBootstrap, err)
			}
			return err
		}
		if seq > rp.primaryLast.Load() {
			rp.primaryLast.Store(seq)
		}
	}
}

// readFrame reads one frame of a WAL stream (frameWriter.write): a record's sequence
// number and data, or a heartbeat's sequence number and nil data. A frame larger than a
// WAL record or whose data fails its checksum is an error, as is a cut stream.
func readFrame(br *bufio.Reader, head *[frameHeader]byte) (seq uint64, data []byte, err error) {
	if _, err := io.ReadFull(br, head[:]); err != nil {
		return 0, nil, fmt.Errorf("reading wal stream: %w", err)
	}
	seq = binary.LittleEndian.Uint64(head[0:])
	n := binary.LittleEndian.Uint32(head[8:])
	if n == heartbeatLen {
		return seq, nil, nil
	}
	if n > wal.MaxRecordBytes {
		return 0, nil, fmt.Errorf("wal stream: frame of %d bytes", n)
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(br, data); err != nil {
		return 0, nil, fmt.Errorf("reading wal stream: %w", err)
	}
	if crc32.Checksum(data, castagnoli) != binary.LittleEndian.Uint32(head[12:]) {
		return 0, nil, fmt.Errorf("wal stream: record %d fails its checksum", seq)
	}
	return seq, data, nil
}
