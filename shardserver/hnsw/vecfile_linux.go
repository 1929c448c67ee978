package hnsw

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// segments maps the vector file chunkSize slots at a time.
type segments struct {
	mu   sync.Mutex // serialises growth
	tbl  atomic.Pointer[[][]float32]
	maps [][]byte
}

// segment returns the mapping that holds slot id, mapping it (and reserving its disk
// space) if needed.
func (vf *vecFile) segment(id uint32) ([]float32, error) {
	si := int(id >> chunkBits)
	if t := vf.segs.tbl.Load(); t != nil && si < len(*t) {
		return (*t)[si], nil
	}
	vf.segs.mu.Lock()
	defer vf.segs.mu.Unlock()
	var cur [][]float32
	if t := vf.segs.tbl.Load(); t != nil {
		cur = *t
	}
	segBytes := int64(chunkSize) * vf.row // a multiple of the page size: chunkSize*4 is
	for len(cur) <= si {
		off := int64(len(cur)) * segBytes
		if err := unix.Fallocate(int(vf.f.Fd()), 0, off, segBytes); err != nil {
			return nil, vf.fail(fmt.Errorf("grow vector file: %w", err))
		}
		m, err := unix.Mmap(int(vf.f.Fd()), off, int(segBytes), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return nil, vf.fail(fmt.Errorf("map vector file: %w", err))
		}
		vf.segs.maps = append(vf.segs.maps, m)
		next := make([][]float32, len(cur)+1)
		copy(next, cur)
		next[len(cur)] = unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(m))), len(m)/4)
		cur = next
		vf.segs.tbl.Store(&next)
	}
	return cur[si], nil
}

// vector returns slot id's vector: a view of the mapping, valid while the slot is
// (buf is not used).
func (vf *vecFile) vector(id uint32, _ []float32) ([]float32, error) {
	seg, err := vf.segment(id)
	if err != nil {
		return nil, err
	}
	b := int(id&chunkMask) * vf.dim
	return seg[b : b+vf.dim : b+vf.dim], nil
}

// prefetch asks the CPU to fetch slot id's vector into its caches, ahead of a
// vector call that reads it; a slot not mapped yet is left alone.
func (vf *vecFile) prefetch(id uint32) { vf.prefetchLines(id, (vf.dim*4+63)/64) }

// prefetchFirst fetches the first line of slot id's vector: the page walk of its
// address, which the CPU can do for several vectors at once, and the start of it.
func (vf *vecFile) prefetchFirst(id uint32) { vf.prefetchLines(id, 1) }

func (vf *vecFile) prefetchLines(id uint32, n int) {
	t := vf.segs.tbl.Load()
	if t == nil || int(id>>chunkBits) >= len(*t) {
		return
	}
	b := int(id&chunkMask) * vf.dim
	prefetchLines(&(*t)[id>>chunkBits][b], n)
}

func (vf *vecFile) write(id uint32, v []float32) error {
	seg, err := vf.segment(id)
	if err != nil {
		return err
	}
	b := int(id&chunkMask) * vf.dim
	copy(seg[b:b+vf.dim], v)
	return nil
}

func (s *segments) unmap() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for _, m := range s.maps {
		if err := unix.Munmap(m); err != nil && first == nil {
			first = err
		}
	}
	s.maps = nil
	empty := [][]float32{}
	s.tbl.Store(&empty)
	return first
}
