package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
)

// Read calls fn with every acknowledged record whose Seq >= from, in order, up to
// the LastSeq of when Read was called. from 0 means from the start. It returns
// ErrTrimmed when from is older than the log's oldest record (or the log is Reset
// meanwhile), and fn's error as is. fn owns each Record's Data.
func (l *Log) Read(from uint64, fn func(Record) error) error {
	c, err := l.newCursor(from)
	if err != nil {
		return err
	}
	defer c.close()
	return c.pump(l.lastSeq.Load(), fn)
}

// Follow is Read, then it keeps delivering records as they are acknowledged until
// ctx is done (it returns ctx.Err()), fn fails (its error), the log is closed
// (ErrClosed) or reset (ErrTrimmed). It reads the segment files on its own and waits
// on a broadcast channel, so followers never block appenders.
func (l *Log) Follow(ctx context.Context, from uint64, fn func(Record) error) error {
	c, err := l.newCursor(from)
	if err != nil {
		return err
	}
	defer c.close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Take the channel before reading LastSeq: a record acknowledged after the
		// read closes this channel, so no wake-up is missed.
		l.mu.Lock()
		wake, closed, gen := l.notify, l.closed, l.gen
		l.mu.Unlock()
		if closed {
			return ErrClosed
		}
		if gen != c.gen {
			// Even a follower with nothing left to read learns of the reset now.
			return fmt.Errorf("wal: follow at seq %d: log was reset: %w", c.next, ErrTrimmed)
		}
		if err := c.pump(l.lastSeq.Load(), fn); err != nil {
			return err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.quit:
			return ErrClosed
		}
	}
}

// cursor reads records in seq order across segment files through its own file
// descriptors; the log's lock is taken only to look up segments and their sizes.
type cursor struct {
	l    *Log
	next uint64 // next seq to deliver
	gen  uint64
	seg  *segment // the segment f is; its fields are read under l.mu
	f    *os.File
	r    *frameReader
}

func (l *Log) newCursor(from uint64) (*cursor, error) {
	from = max(from, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if oldest := l.segs[0].first; from < oldest {
		return nil, fmt.Errorf("wal: read from seq %d, oldest is %d: %w", from, oldest, ErrTrimmed)
	}
	return &cursor{l: l, next: from, gen: l.gen}, nil
}

func (c *cursor) close() {
	if c.f != nil {
		c.f.Close()
		c.f = nil
	}
}

// open opens the segment holding c.next (the last one when c.next is not written
// yet), positioned by the segment's index.
func (c *cursor) open() error {
	l := c.l
	l.mu.Lock()
	if l.gen != c.gen {
		l.mu.Unlock()
		return fmt.Errorf("wal: read at seq %d: log was reset: %w", c.next, ErrTrimmed)
	}
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].first > c.next })
	if i == 0 {
		oldest := l.segs[0].first
		l.mu.Unlock()
		return fmt.Errorf("wal: read at seq %d, oldest is %d: %w", c.next, oldest, ErrTrimmed)
	}
	s := l.segs[i-1]
	off := s.lookup(c.next)
	l.mu.Unlock()
	f, err := os.Open(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("wal: read at seq %d: segment removed: %w", c.next, ErrTrimmed)
	}
	if err != nil {
		return fmt.Errorf("wal: read: %w", err)
	}
	c.seg, c.f, c.r = s, f, newFrameReader(f, off)
	return nil
}

// pump delivers the records from c.next through upto.
func (c *cursor) pump(upto uint64, fn func(Record) error) error {
	l := c.l
	stalled := int64(-1) // limit of an active segment read to its end with upto unmet
	for c.next <= upto {
		if c.f == nil {
			if err := c.open(); err != nil {
				return err
			}
		}
		l.mu.Lock()
		if l.gen != c.gen {
			l.mu.Unlock()
			return fmt.Errorf("wal: read at seq %d: log was reset: %w", c.next, ErrTrimmed)
		}
		// A trimmed segment is no longer listed and was sealed: the active one is
		// never trimmed.
		limit, sealed := c.seg.size, c.seg != l.segs[len(l.segs)-1]
		l.mu.Unlock()
		if !sealed && limit == stalled {
			// Unreachable while sizes are published with LastSeq; never spin.
			return nil
		}
		for c.next <= upto {
			off := c.r.off
			seq, data, st, err := c.r.next(limit)
			if err != nil {
				return fmt.Errorf("wal: read %s: %w", c.seg.path, err)
			}
			if st == frameShort {
				break
			}
			if st == frameBad || seq > c.next {
				return fmt.Errorf("wal: read %s offset %d at seq %d: %w", c.seg.path, off, c.next, ErrCorrupt)
			}
			if seq < c.next {
				continue
			}
			c.next++
			if err := fn(Record{Seq: seq, Data: bytes.Clone(data)}); err != nil {
				return err
			}
		}
		if c.next > upto {
			return nil
		}
		if !sealed {
			// Everything acknowledged in the active segment is read; what upto
			// still names lies in a segment started after the lookup above.
			stalled = limit
			continue
		}
		c.close()
	}
	return nil
}
