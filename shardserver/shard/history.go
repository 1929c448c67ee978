package shard

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// A history is the sequence of records a data directory holds, from the record 1 of a
// fresh directory on. Sequence numbers alone cannot tell two histories apart: a primary
// whose directory was wiped and refilled to the same length has the same numbers for
// other records. So every history gets a random id when its directory is created; it is
// kept in the file "history" of the data directory, in every snapshot, and sent with
// every replication response (HistoryHeader). A replica adopts its primary's id when it
// bootstraps from the primary's snapshot, and a replica that sees another id from its
// primary bootstraps again instead of following records that are not the ones it has.
type historyID [16]byte

// HistoryHeader carries the history id on replication responses.
const HistoryHeader = "X-Annshard-History"

const historyFile = "history"

func newHistoryID() historyID {
	var h historyID
	_, _ = rand.Read(h[:]) // crypto/rand.Read never fails (it panics first)
	return h
}

func (h historyID) String() string { return hex.EncodeToString(h[:]) }

func parseHistoryID(s string) (historyID, error) {
	var h historyID
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("history id %q: want %d hex digits", s, 2*len(h))
	}
	copy(h[:], b)
	return h, nil
}

// readHistory reads the history id of dataDir; ok is false when it has none yet.
func readHistory(dataDir string) (h historyID, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dataDir, historyFile))
	if errors.Is(err, os.ErrNotExist) {
		return h, false, nil
	}
	if err != nil {
		return h, false, fmt.Errorf("reading history id: %w", err)
	}
	if h, err = parseHistoryID(string(b)); err != nil {
		return h, false, fmt.Errorf("reading %s: %w", filepath.Join(dataDir, historyFile), err)
	}
	return h, true, nil
}

// writeHistory stores h as dataDir's history id: temp file, fsync, rename, directory
// fsync, so a crash leaves the old id or the new one.
func writeHistory(dataDir string, h historyID) error {
	if err := writeFileDurable(filepath.Join(dataDir, historyFile), []byte(h.String()+"\n")); err != nil {
		return fmt.Errorf("writing history id: %w", err)
	}
	return nil
}
