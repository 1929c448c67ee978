//go:build !linux

package wal

import (
	"fmt"
	"os"
	"path/filepath"
)

// fdatasync is fsync where the platform has no cheaper data-only sync.
func fdatasync(f *os.File) error { return f.Sync() }

// lockDir only creates the lock file: advisory locking is Linux-only here, the
// platform the shard server runs on.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	return f, nil
}
