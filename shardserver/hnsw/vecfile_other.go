//go:build !linux

package hnsw

import (
	"fmt"
	"math"
)

// segments is empty where the vector file is read and written with pread and pwrite.
type segments struct{}

func (segments) unmap() error { return nil }

// vector reads slot id's vector into buf.
func (vf *vecFile) vector(id uint32, buf []float32) ([]float32, error) {
	buf = buf[:vf.dim]
	b := floatBytes(buf)
	if _, err := vf.f.ReadAt(b, int64(id)*vf.row); err != nil {
		return nil, vf.fail(fmt.Errorf("read vector file: %w", err))
	}
	if !littleEndian {
		for i := range buf {
			buf[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
		}
	}
	return buf, nil
}

// prefetch does nothing: vector copies the vector from the file.
func (vf *vecFile) prefetch(uint32)      {}
func (vf *vecFile) prefetchFirst(uint32) {}

func (vf *vecFile) write(id uint32, v []float32) error {
	b := floatBytes(v)
	if !littleEndian {
		b = appendFloats(nil, v)
	}
	if _, err := vf.f.WriteAt(b, int64(id)*vf.row); err != nil {
		return vf.fail(fmt.Errorf("write vector file: %w", err))
	}
	return nil
}
