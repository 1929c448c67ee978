package hnsw

import (
	"fmt"
	"os"
	"sync"
	"unsafe"
)

// vecFile holds the float32 vectors of an Int8 index, slot by slot, in an unlinked
// file, so that they are in the page cache, not in the Go heap. On Linux the file is
// mapped in segments of chunkSize slots, each reserved on disk (fallocate) before it
// is mapped, so that a full disk is an error of Add and never a fault on a later
// store; elsewhere it is read and written with pread and pwrite.
//
// Slots follow the node slots of the index, and the same rules protect them: a slot is
// written before its node is published, and rewritten only after Vacuum freed the
// node and waited out every reader.
type vecFile struct {
	f    *os.File
	dim  int
	row  int64 // bytes per slot
	segs segments

	mu     sync.Mutex
	failed error // the first I/O error: the index refuses to go on after one
	closed bool
}

func newVecFile(dir string, dim int) (*vecFile, error) {
	f, err := os.CreateTemp(dir, "hnsw-vectors-*.f32")
	if err != nil {
		return nil, fmt.Errorf("create vector file: %w", err)
	}
	// Unlinked at once: the file lives as long as the descriptor, and a crash leaves
	// nothing behind (the vectors are rebuilt from snapshots and the WAL).
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("create vector file: %w", err)
	}
	return &vecFile{f: f, dim: dim, row: int64(dim) * 4}, nil
}

func (vf *vecFile) fail(err error) error {
	vf.mu.Lock()
	defer vf.mu.Unlock()
	if vf.failed == nil {
		vf.failed = err
	}
	return vf.failed
}

func (vf *vecFile) err() error {
	vf.mu.Lock()
	defer vf.mu.Unlock()
	return vf.failed
}

// read copies slot id's vector into dst.
func (vf *vecFile) read(id uint32, dst []float32) error {
	v, err := vf.vector(id, dst)
	if err != nil {
		return err
	}
	copy(dst, v)
	return nil
}

func (vf *vecFile) close() error {
	vf.mu.Lock()
	defer vf.mu.Unlock()
	if vf.closed {
		return nil
	}
	vf.closed = true
	err := vf.segs.unmap()
	if cerr := vf.f.Close(); err == nil {
		err = cerr
	}
	return err
}

func floatBytes(v []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*len(v))
}
