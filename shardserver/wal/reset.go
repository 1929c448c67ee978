package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// resetName is the marker of a Reset in progress: while it exists the directory's
// segments are a history being dropped, whatever they look like.
const resetName = "RESET"

func encodeResetMarker(seq uint64) []byte {
	b := make([]byte, 12)
	binary.LittleEndian.PutUint64(b, seq)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[:8], crcTable))
	return b
}

// pendingReset returns the seq of an interrupted Reset of dir, if there is one.
func pendingReset(dir string) (seq uint64, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, resetName))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read reset marker: %w", err)
	}
	if len(b) != 12 || crc32.Checksum(b[:8], crcTable) != binary.LittleEndian.Uint32(b[8:]) {
		// Created by temp file and rename: a bad marker is not a crash.
		return 0, false, fmt.Errorf("reset marker %s: %w", filepath.Join(dir, resetName), ErrCorrupt)
	}
	return binary.LittleEndian.Uint64(b), true, nil
}

// resetDir makes dir hold an empty log that continues after seq. It writes the
// marker first and removes it last, so a crash anywhere in between leaves a marker
// that Open acts on by running resetDir again: a half-deleted old history is never
// taken for a log, and the new empty segment holds nothing that redoing would lose.
func resetDir(dir string, seq uint64, dur durability) (*segment, error) {
	if err := createFileAtomic(dir, resetName, encodeResetMarker(seq), dur); err != nil {
		return nil, fmt.Errorf("reset: %w", err)
	}
	firsts, err := listSegments(dir)
	if err != nil {
		return nil, fmt.Errorf("reset: %w", err)
	}
	for _, first := range firsts {
		if err := os.Remove(filepath.Join(dir, segName(first))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("reset: %w", err)
		}
	}
	if err := dur.dir(dir); err != nil {
		return nil, fmt.Errorf("reset: %w", err)
	}
	s, err := createSegment(dir, seq+1, dur)
	if err != nil {
		return nil, fmt.Errorf("reset: %w", err)
	}
	if err := os.Remove(filepath.Join(dir, resetName)); err != nil {
		return nil, fmt.Errorf("reset: %w", err)
	}
	if err := dur.dir(dir); err != nil {
		return nil, fmt.Errorf("reset: %w", err)
	}
	return s, nil
}
