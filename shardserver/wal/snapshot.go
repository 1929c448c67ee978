package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

const (
	snapPrefix      = "snap-"
	snapSuffix      = ".snap"
	snapMagic       = "ANNSNAP1"
	snapTrailerSize = 32
	// keepSnapshots is how many snapshots WriteSnapshot leaves: the newest and one
	// to fall back to when the newest turns out corrupt.
	keepSnapshots = 2
	snapBufSize   = 256 << 10
)

func snapName(seq uint64) string { return fmt.Sprintf("%s%020d%s", snapPrefix, seq, snapSuffix) }

// SnapshotPath is the file of the snapshot at seq in dir, as Snapshots lists them.
func SnapshotPath(dir string, seq uint64) string { return filepath.Join(dir, snapName(seq)) }

func parseSnapName(name string) (uint64, bool) {
	if len(name) != len(snapPrefix)+20+len(snapSuffix) ||
		!strings.HasPrefix(name, snapPrefix) || !strings.HasSuffix(name, snapSuffix) {
		return 0, false
	}
	n, err := strconv.ParseUint(name[len(snapPrefix):len(snapPrefix)+20], 10, 64)
	return n, err == nil
}

// crcWriter checksums and counts what passes through it.
type crcWriter struct {
	w   io.Writer
	crc hash.Hash32
	n   uint64
}

func (c *crcWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.crc.Write(p[:n])
	c.n += uint64(n)
	return n, err
}

// WriteSnapshot writes the snapshot that includes every record through seq: write
// fills the payload of a temp file, which gets a checksum trailer, is fsynced and
// renamed into place, and the directory is fsynced. The new snapshot becomes the
// newest: snapshots with a higher seq belong to a history it replaces (a replica
// re-bootstrapping from a primary that is behind them) and are removed, and of the
// older ones only the newest is kept, as the fallback. Temp files of crashed writers
// are removed. On error no snapshot changes. One directory has one writer at a time.
func WriteSnapshot(dir string, seq uint64, write func(w io.Writer) error) (err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("wal: write snapshot %d: %w", seq, err)
	}
	final := snapName(seq)
	tmp := filepath.Join(dir, strings.TrimSuffix(final, snapSuffix)+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("wal: write snapshot %d: %w", seq, err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			_ = os.Remove(tmp)
			err = fmt.Errorf("wal: write snapshot %d: %w", seq, err)
		}
	}()
	bw := bufio.NewWriterSize(f, snapBufSize)
	cw := &crcWriter{w: bw, crc: crc32.New(crcTable)}
	if err := write(cw); err != nil {
		return err
	}
	if _, err := bw.Write(encodeSnapTrailer(seq, cw.n, cw.crc.Sum32())); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	cerr := f.Close()
	f = nil
	if cerr != nil {
		return cerr
	}
	if err := os.Rename(tmp, filepath.Join(dir, final)); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	return pruneSnapshots(dir, seq)
}

func encodeSnapTrailer(seq, n uint64, crc uint32) []byte {
	t := make([]byte, snapTrailerSize)
	copy(t, snapMagic)
	binary.LittleEndian.PutUint64(t[8:], seq)
	binary.LittleEndian.PutUint64(t[16:], n)
	binary.LittleEndian.PutUint32(t[24:], crc)
	binary.LittleEndian.PutUint32(t[28:], crc32.Checksum(t[:28], crcTable))
	return t
}

// pruneSnapshots keeps the snapshot at seq and the keepSnapshots-1 newest before
// it, and removes every other snapshot and any temp file a crashed writer left.
func pruneSnapshots(dir string, seq uint64) error {
	seqs, err := listSnapshots(dir)
	if err != nil {
		return err
	}
	kept := 0
	for _, s := range seqs {
		if s <= seq && kept < keepSnapshots {
			kept++
			continue
		}
		if err := os.Remove(filepath.Join(dir, snapName(s))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), snapPrefix) && strings.HasSuffix(e.Name(), tmpSuffix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// listSnapshots returns the seqs of the snapshot files in dir, newest first; a
// missing dir has none.
func listSnapshots(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	var seqs []uint64
	for _, e := range ents {
		if seq, ok := parseSnapName(e.Name()); ok && e.Type().IsRegular() {
			seqs = append(seqs, seq)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] > seqs[j] })
	return seqs, nil
}

// Snapshots returns the seqs of the snapshot files in dir, newest first, without
// verifying them. A shard trims its log before the oldest of them plus one, not the
// newest: if the newest turns out corrupt, LoadSnapshot falls back to the older one
// and the records after it must still be in the log.
func Snapshots(dir string) ([]uint64, error) {
	seqs, err := listSnapshots(dir)
	if err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	return seqs, nil
}

// openSnap opens a snapshot file and checks its trailer against the file name and
// size, returning the payload length and checksum the trailer promises.
func openSnap(path string) (f *os.File, seq, n uint64, crc uint32, err error) {
	nameSeq, ok := parseSnapName(filepath.Base(path))
	if !ok {
		return nil, 0, 0, 0, fmt.Errorf("snapshot %s: not a snapshot file name", path)
	}
	f, err = os.Open(path)
	if err != nil {
		return nil, 0, 0, 0, fmt.Errorf("open snapshot: %w", err)
	}
	fail := func(format string, args ...any) (*os.File, uint64, uint64, uint32, error) {
		f.Close()
		return nil, 0, 0, 0, fmt.Errorf("snapshot %s: %s: %w", path, fmt.Sprintf(format, args...), ErrCorrupt)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, 0, 0, fmt.Errorf("stat snapshot: %w", err)
	}
	if st.Size() < snapTrailerSize {
		return fail("%d bytes, shorter than its trailer", st.Size())
	}
	t := make([]byte, snapTrailerSize)
	if _, err := f.ReadAt(t, st.Size()-snapTrailerSize); err != nil {
		f.Close()
		return nil, 0, 0, 0, fmt.Errorf("read snapshot trailer: %w", err)
	}
	if string(t[:8]) != snapMagic || crc32.Checksum(t[:28], crcTable) != binary.LittleEndian.Uint32(t[28:]) {
		return fail("bad trailer")
	}
	seq, n, crc = binary.LittleEndian.Uint64(t[8:]), binary.LittleEndian.Uint64(t[16:]), binary.LittleEndian.Uint32(t[24:])
	if seq != nameSeq {
		return fail("trailer names seq %d", seq)
	}
	if n != uint64(st.Size()-snapTrailerSize) {
		return fail("trailer says %d payload bytes, file has %d", n, st.Size()-snapTrailerSize)
	}
	return f, seq, n, crc, nil
}

// snapReader yields a snapshot's payload and fails at its end if the checksum
// does not match, so a consumer never takes a corrupt payload as complete.
type snapReader struct {
	f    *os.File
	r    *bufio.Reader
	crc  hash.Hash32
	want uint32
	path string
}

func (s *snapReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.crc.Write(p[:n])
	if errors.Is(err, io.EOF) && s.crc.Sum32() != s.want {
		return n, fmt.Errorf("snapshot %s: payload checksum mismatch: %w", s.path, ErrCorrupt)
	}
	return n, err
}

func (s *snapReader) Close() error { return s.f.Close() }

// OpenSnapshot opens the payload of the snapshot file at path (as LatestSnapshot
// names it). The trailer is checked now, the payload checksum as it is read: the
// reader returns an error wrapping ErrCorrupt instead of io.EOF if it does not match.
func OpenSnapshot(path string) (io.ReadCloser, error) {
	f, _, n, crc, err := openSnap(path)
	if err != nil {
		return nil, fmt.Errorf("wal: open snapshot: %w", err)
	}
	return &snapReader{
		f:    f,
		r:    bufio.NewReaderSize(io.NewSectionReader(f, 0, int64(n)), snapBufSize),
		crc:  crc32.New(crcTable),
		want: crc,
		path: path,
	}, nil
}

// verifySnapshot reads a whole snapshot file, checks it and returns its payload size.
func verifySnapshot(path string) (uint64, error) {
	rc, err := OpenSnapshot(path)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if err != nil {
		return 0, fmt.Errorf("wal: verify snapshot: %w", err)
	}
	return uint64(n), nil
}

// LoadSnapshot calls read with the seq and payload of the newest snapshot in dir. The
// payload is checked in the one pass read makes: its reader returns an error wrapping
// ErrCorrupt instead of io.EOF when the checksum fails, so read must read to io.EOF
// before it trusts what it built. If the newest is corrupt or read fails, it tries the
// previous one, so read must discard what it built before returning an error. (A
// snapshot is as large as the index: a pass to verify it first would cost a restart
// as much time again.) With no snapshot it returns (0, nil) without calling read; when
// snapshots exist but none loads, the error joins each one's.
func LoadSnapshot(dir string, read func(seq uint64, r io.Reader) error) (uint64, error) {
	seqs, err := listSnapshots(dir)
	if err != nil {
		return 0, fmt.Errorf("wal: load snapshot: %w", err)
	}
	var errs []error
	for _, seq := range seqs {
		path := filepath.Join(dir, snapName(seq))
		rc, err := OpenSnapshot(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = read(seq, rc)
		rc.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("wal: load snapshot %s: %w", path, err))
			continue
		}
		return seq, nil
	}
	if len(errs) > 0 {
		return 0, fmt.Errorf("wal: load snapshot: none of %d in %s loads: %w", len(seqs), dir, errors.Join(errs...))
	}
	return 0, nil
}

// LatestSnapshot returns the newest snapshot in dir whose checksum verifies: its
// path for OpenSnapshot, its seq and its payload size (what OpenSnapshot yields, for
// a Content-Length). path is "" when dir has no snapshot; when snapshots exist but
// none verifies, the error wraps ErrCorrupt.
func LatestSnapshot(dir string) (path string, seq uint64, size int64, err error) {
	seqs, err := listSnapshots(dir)
	if err != nil {
		return "", 0, 0, fmt.Errorf("wal: latest snapshot: %w", err)
	}
	var errs []error
	for _, s := range seqs {
		p := filepath.Join(dir, snapName(s))
		n, err := verifySnapshot(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return p, s, int64(n), nil
	}
	if len(errs) > 0 {
		return "", 0, 0, fmt.Errorf("wal: latest snapshot: none of %d in %s verifies: %w", len(seqs), dir, errors.Join(errs...))
	}
	return "", 0, 0, nil
}
