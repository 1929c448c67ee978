package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// checkpointVersion is bumped when the file's meaning changes; an old checkpoint is
// then refused rather than misread.
const checkpointVersion = 1

// checkpoint records which batches of an import were acknowledged by the router, so
// that --resume sends only the others. A batch is a fixed range of source rows (batch b of
// a file is rows [b*BatchSize, (b+1)*BatchSize)), and ids are a function of the row, so a
// batch sent twice writes the same ids again: a resumed import never duplicates a vector.
type checkpoint struct {
	Version   int              `json:"version"`
	Namespace string           `json:"namespace"`
	Index     string           `json:"index"`
	BatchSize int              `json:"batchSize"`
	IDScheme  string           `json:"idScheme"`
	Files     []checkpointFile `json:"files"`
	Updated   time.Time        `json:"updated"`

	path  string
	mu    sync.Mutex
	acked []map[int64]bool // per file: acknowledged batch numbers
	dirty bool
}

type checkpointFile struct {
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"modTime"`
	// Acked lists the acknowledged batches as ranges: "0-41,43,45-60".
	Acked string `json:"acked"`
}

// defaultCheckpointPath is where an import of ns/index keeps its checkpoint unless
// --checkpoint says otherwise: the user's cache directory, one file per index.
func defaultCheckpointPath(ns, index string) string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "annshard", fmt.Sprintf("import-%s-%s.checkpoint.json", ns, index))
}

func newCheckpoint(path, ns, index string, batch int, idScheme string, files []*importFile) *checkpoint {
	cp := &checkpoint{Version: checkpointVersion, Namespace: ns, Index: index, BatchSize: batch, IDScheme: idScheme, path: path}
	for _, f := range files {
		cp.Files = append(cp.Files, checkpointFile{Path: f.abs, Size: f.size, ModTime: f.modTime})
		cp.acked = append(cp.acked, map[int64]bool{})
	}
	return cp
}

// loadCheckpoint reads the checkpoint at path and checks that it describes the same
// import: the same index, files (by path, size and modification time), batch size and
// ids. Anything else would skip the wrong rows.
func loadCheckpoint(path string, want *checkpoint) (*checkpoint, error) {
	raw, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("--resume: no checkpoint at %s (an import that finished removes its checkpoint; --checkpoint names another)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("--resume: %w", err)
	}
	cp := &checkpoint{}
	if err := json.Unmarshal(raw, cp); err != nil {
		return nil, fmt.Errorf("--resume: checkpoint %s is corrupt: %w", path, err)
	}
	cp.path = path
	mismatch := func(what string, got, wantV any) error {
		return fmt.Errorf("--resume: checkpoint %s is of another import (%s: %v there, %v now); run without --resume to start over", path, what, got, wantV)
	}
	switch {
	case cp.Version != checkpointVersion:
		return nil, mismatch("version", cp.Version, checkpointVersion)
	case cp.Namespace != want.Namespace || cp.Index != want.Index:
		return nil, mismatch("index", cp.Namespace+"/"+cp.Index, want.Namespace+"/"+want.Index)
	case cp.BatchSize != want.BatchSize:
		return nil, mismatch("--batch-size", cp.BatchSize, want.BatchSize)
	case cp.IDScheme != want.IDScheme:
		return nil, mismatch("ids", cp.IDScheme, want.IDScheme)
	case len(cp.Files) != len(want.Files):
		return nil, mismatch("number of files", len(cp.Files), len(want.Files))
	}
	for i, f := range cp.Files {
		w := want.Files[i]
		if f.Path != w.Path {
			return nil, mismatch(fmt.Sprintf("file %d", i+1), f.Path, w.Path)
		}
		if f.Size != w.Size || !f.ModTime.Equal(w.ModTime) {
			return nil, fmt.Errorf("--resume: %s changed since the checkpoint was written (size %d, modified %s; now %d, %s): run without --resume to start over",
				f.Path, f.Size, f.ModTime.Format(time.RFC3339), w.Size, w.ModTime.Format(time.RFC3339))
		}
		set, err := parseRanges(f.Acked)
		if err != nil {
			return nil, fmt.Errorf("--resume: checkpoint %s is corrupt: %w", path, err)
		}
		cp.acked = append(cp.acked, set)
	}
	return cp, nil
}

func (cp *checkpoint) isAcked(file int, batch int64) bool {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.acked[file][batch]
}

func (cp *checkpoint) ack(file int, batch int64) {
	cp.mu.Lock()
	cp.acked[file][batch] = true
	cp.dirty = true
	cp.mu.Unlock()
}

func (cp *checkpoint) ackedBatches() int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	n := 0
	for _, s := range cp.acked {
		n += len(s)
	}
	return n
}

// save writes the checkpoint atomically (a temporary file renamed over it), so an
// interrupted save leaves the previous one.
func (cp *checkpoint) save() error {
	cp.mu.Lock()
	for i := range cp.Files {
		cp.Files[i].Acked = formatRanges(cp.acked[i])
	}
	cp.Updated = time.Now().UTC()
	raw, err := json.MarshalIndent(cp, "", "  ")
	cp.dirty = false
	cp.mu.Unlock()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(cp.path), 0o755); err != nil {
		return fmt.Errorf("saving checkpoint: %w", err)
	}
	tmp := cp.path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o644); err != nil {
		return fmt.Errorf("saving checkpoint: %w", err)
	}
	if err := os.Rename(tmp, cp.path); err != nil {
		return fmt.Errorf("saving checkpoint: %w", err)
	}
	return nil
}

func (cp *checkpoint) saveIfDirty() error {
	cp.mu.Lock()
	dirty := cp.dirty
	cp.mu.Unlock()
	if !dirty {
		return nil
	}
	return cp.save()
}

func (cp *checkpoint) remove() error {
	err := os.Remove(cp.path)
	if os.IsNotExist(err) {
		return nil
	}
	return err
}

// formatRanges writes a set of batch numbers as "0-41,43".
func formatRanges(set map[int64]bool) string {
	nums := make([]int64, 0, len(set))
	for n := range set {
		nums = append(nums, n)
	}
	slices.Sort(nums)
	var b strings.Builder
	for i := 0; i < len(nums); {
		j := i
		for j+1 < len(nums) && nums[j+1] == nums[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(nums[i], 10))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.FormatInt(nums[j], 10))
		}
		i = j + 1
	}
	return b.String()
}

func parseRanges(s string) (map[int64]bool, error) {
	set := map[int64]bool{}
	if s == "" {
		return set, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		a, b, isRange := strings.Cut(part, "-")
		lo, err := strconv.ParseInt(a, 10, 64)
		if err != nil || lo < 0 {
			return nil, fmt.Errorf("bad batch range %q", part)
		}
		hi := lo
		if isRange {
			if hi, err = strconv.ParseInt(b, 10, 64); err != nil || hi < lo || hi-lo > 1<<32 {
				return nil, fmt.Errorf("bad batch range %q", part)
			}
		}
		for n := lo; n <= hi; n++ {
			set[n] = true
		}
	}
	return set, nil
}
