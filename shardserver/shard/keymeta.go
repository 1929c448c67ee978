package shard

import (
	"sync/atomic"
)

// keyMeta is what a search's partition filter needs of each index key, readable without
// Store.mu: the graph walk calls the filter for every node it visits, and holding the
// read lock for the whole walk let a queued writer stall every new search behind the
// walks in flight. Writers update it under Store.mu, next to the entries.
//
// It is a table of fixed-size chunks, published by an atomic pointer and copied (the
// small table of chunk pointers, not the chunks) when it grows, so a reader never sees
// a slice being reallocated. A word is 0 for a key that is not live, else
// 1 | slot<<1 | part<<32.
type keyMeta struct {
	chunks atomic.Pointer[[]*metaChunk]
}

const metaChunkSize = 4096

type metaChunk [metaChunkSize]atomic.Uint64

func newKeyMeta() *keyMeta {
	m := &keyMeta{}
	m.chunks.Store(&[]*metaChunk{})
	return m
}

// get returns the partition index and slot of a live key; ok is false for a key that
// is deleted or was never assigned.
func (m *keyMeta) get(key uint64) (part uint32, slot uint16, ok bool) {
	cs := *m.chunks.Load()
	c := key / metaChunkSize
	if c >= uint64(len(cs)) {
		return 0, 0, false
	}
	w := cs[c][key%metaChunkSize].Load()
	return uint32(w >> 32), uint16(w >> 1), w&1 != 0
}

// set records key as live in partition part and slot; the caller holds Store.mu.
func (m *keyMeta) set(key uint64, part uint32, slot uint16) {
	m.word(key).Store(1 | uint64(slot)<<1 | uint64(part)<<32)
}

// clear records key as not live; the caller holds Store.mu.
func (m *keyMeta) clear(key uint64) {
	if key/metaChunkSize < uint64(len(*m.chunks.Load())) {
		m.word(key).Store(0)
	}
}

func (m *keyMeta) word(key uint64) *atomic.Uint64 {
	cs := *m.chunks.Load()
	c := key / metaChunkSize
	if c >= uint64(len(cs)) {
		grown := make([]*metaChunk, c+1)
		copy(grown, cs)
		for i := len(cs); i < len(grown); i++ {
			grown[i] = new(metaChunk)
		}
		m.chunks.Store(&grown)
		cs = grown
	}
	return &cs[c][key%metaChunkSize]
}
