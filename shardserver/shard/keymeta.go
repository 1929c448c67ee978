package shard

import (
	"sync"
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
//
// It also keeps each partition's live keys (partition 0, none, aside), in step with the
// words, so that a search of a small partition scans its keys exactly instead of
// walking the graph for them (hnsw.Index.SearchSubset).
type keyMeta struct {
	chunks atomic.Pointer[[]*metaChunk]

	listMu sync.Mutex
	lists  map[uint32]*keyList
}

// keyList is a set of keys with O(1) insert and removal, iterable as a slice.
type keyList struct {
	keys []uint64
	pos  map[uint64]int
}

func (l *keyList) add(key uint64) {
	if _, ok := l.pos[key]; ok {
		return
	}
	l.pos[key] = len(l.keys)
	l.keys = append(l.keys, key)
}

func (l *keyList) remove(key uint64) {
	i, ok := l.pos[key]
	if !ok {
		return
	}
	last := l.keys[len(l.keys)-1]
	l.keys[i] = last
	l.pos[last] = i
	l.keys = l.keys[:len(l.keys)-1]
	delete(l.pos, key)
}

const metaChunkSize = 4096

type metaChunk [metaChunkSize]atomic.Uint64

func newKeyMeta() *keyMeta {
	m := &keyMeta{lists: map[uint32]*keyList{}}
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
	w := m.word(key)
	old := w.Swap(1 | uint64(slot)<<1 | uint64(part)<<32)
	if oldPart, live := uint32(old>>32), old&1 != 0; !live || oldPart != part {
		m.listMu.Lock()
		if live {
			m.unlist(oldPart, key)
		}
		if part != 0 {
			l := m.lists[part]
			if l == nil {
				l = &keyList{pos: map[uint64]int{}}
				m.lists[part] = l
			}
			l.add(key)
		}
		m.listMu.Unlock()
	}
}

// clear records key as not live; the caller holds Store.mu.
func (m *keyMeta) clear(key uint64) {
	if key/metaChunkSize < uint64(len(*m.chunks.Load())) {
		if old := m.word(key).Swap(0); old&1 != 0 {
			m.listMu.Lock()
			m.unlist(uint32(old>>32), key)
			m.listMu.Unlock()
		}
	}
}

// unlist drops key from part's list; the caller holds listMu.
func (m *keyMeta) unlist(part uint32, key uint64) {
	if l := m.lists[part]; l != nil {
		l.remove(key)
		if len(l.keys) == 0 {
			delete(m.lists, part)
		}
	}
}

// partLen is the number of live keys of partition part (not 0).
func (m *keyMeta) partLen(part uint32) int {
	m.listMu.Lock()
	defer m.listMu.Unlock()
	if l := m.lists[part]; l != nil {
		return len(l.keys)
	}
	return 0
}

// partKeys returns a copy of partition part's live keys.
func (m *keyMeta) partKeys(part uint32) []uint64 {
	m.listMu.Lock()
	defer m.listMu.Unlock()
	if l := m.lists[part]; l != nil {
		return append([]uint64(nil), l.keys...)
	}
	return nil
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
