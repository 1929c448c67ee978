package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/annshard/annshard/shardserver/slots"
)

// WAL record payloads. A client batch becomes exactly one record, so a crash leaves either
// the whole batch or none of it. Layout (little-endian):
//
//	upsert: 'U' dim:u32 n:u32 { idLen:u16 id partLen:u16 part vec:dim*f32 }*n
//	delete: 'D' partLen:u16 part n:u32 { slot:u16 idLen:u16 id }*n
//	drop:   'X' set:512 bytes (slot bitmap)
//
// A delete carries each id's slot, resolved when it was accepted, so the slot-filtered WAL
// stream used by migration can route it without knowing the (deleted) vector's partition.
const (
	opUpsert = 'U'
	opDelete = 'D'
	opDrop   = 'X'
)

// errBadRecord marks a WAL payload this version cannot decode.
var errBadRecord = errors.New("bad wal record")

type upsertItem struct {
	id, partition string
	vec           []float32
	slot          int
}

type deleteItem struct {
	id   string
	slot int
}

type record struct {
	op        byte
	upserts   []upsertItem
	deletes   []deleteItem
	partition string // delete: only vectors in this partition, when set
	drop      slots.Set
}

func encodeUpsert(dim int, items []upsertItem) []byte {
	size := 9
	for _, it := range items {
		size += 4 + len(it.id) + len(it.partition) + 4*dim
	}
	b := make([]byte, 0, size)
	b = append(b, opUpsert)
	b = binary.LittleEndian.AppendUint32(b, uint32(dim))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(items)))
	for _, it := range items {
		b = appendString(b, it.id)
		b = appendString(b, it.partition)
		for _, f := range it.vec {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
		}
	}
	return b
}

func encodeDelete(partition string, items []deleteItem) []byte {
	b := make([]byte, 0, 16+len(partition)+len(items)*16)
	b = append(b, opDelete)
	b = appendString(b, partition)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(items)))
	for _, it := range items {
		b = binary.LittleEndian.AppendUint16(b, uint16(it.slot))
		b = appendString(b, it.id)
	}
	return b
}

func encodeDrop(s slots.Set) []byte {
	b := make([]byte, 1, 1+slots.Count/8)
	b[0] = opDrop
	var bitmap [slots.Count / 8]byte
	for _, slot := range s.Slots() {
		bitmap[slot/8] |= 1 << (slot % 8)
	}
	return append(b, bitmap[:]...)
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// decoder reads a payload and remembers the first error, so decodeRecord reads straight.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.err = fmt.Errorf("%w: truncated", errBadRecord)
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) u16() int {
	if p := d.take(2); p != nil {
		return int(binary.LittleEndian.Uint16(p))
	}
	return 0
}

func (d *decoder) u32() int {
	if p := d.take(4); p != nil {
		return int(binary.LittleEndian.Uint32(p))
	}
	return 0
}

func (d *decoder) str() string { return string(d.take(d.u16())) }

func decodeRecord(data []byte) (record, error) {
	if len(data) == 0 {
		return record{}, fmt.Errorf("%w: empty", errBadRecord)
	}
	r := record{op: data[0]}
	d := &decoder{b: data[1:]}
	switch r.op {
	case opUpsert:
		dim, n := d.u32(), d.u32()
		if d.err == nil && n > len(d.b)/(4+4*dim) {
			return record{}, fmt.Errorf("%w: %d items cannot fit", errBadRecord, n)
		}
		r.upserts = make([]upsertItem, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			it := upsertItem{id: d.str(), partition: d.str()}
			raw := d.take(4 * dim)
			if d.err != nil {
				break
			}
			it.vec = make([]float32, dim)
			for j := range it.vec {
				it.vec[j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:]))
			}
			it.slot = slots.Of(slots.KeyOf(it.id, it.partition))
			r.upserts = append(r.upserts, it)
		}
	case opDelete:
		r.partition = d.str()
		n := d.u32()
		if d.err == nil && n > len(d.b)/4 {
			return record{}, fmt.Errorf("%w: %d items cannot fit", errBadRecord, n)
		}
		r.deletes = make([]deleteItem, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			slot := d.u16()
			r.deletes = append(r.deletes, deleteItem{slot: slot, id: d.str()})
		}
	case opDrop:
		bitmap := d.take(slots.Count / 8)
		for i := 0; d.err == nil && i < slots.Count; i++ {
			if bitmap[i/8]&(1<<(i%8)) != 0 {
				r.drop.Add(i)
			}
		}
	default:
		return record{}, fmt.Errorf("%w: unknown op %q", errBadRecord, r.op)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errBadRecord, len(d.b))
	}
	return r, d.err
}

// filterSlots keeps only the parts of r that touch set; ok is false when nothing is left
// or the record is not data (a drop), so it is not forwarded to a migration target.
func filterSlots(r record, set *slots.Set) (record, bool) {
	switch r.op {
	case opUpsert:
		out := r.upserts[:0:0]
		for _, it := range r.upserts {
			if set.Has(it.slot) {
				out = append(out, it)
			}
		}
		r.upserts = out
		return r, len(out) > 0
	case opDelete:
		out := r.deletes[:0:0]
		for _, it := range r.deletes {
			if set.Has(it.slot) {
				out = append(out, it)
			}
		}
		r.deletes = out
		return r, len(out) > 0
	}
	return r, false
}

func encodeRecord(dim int, r record) []byte {
	switch r.op {
	case opUpsert:
		return encodeUpsert(dim, r.upserts)
	case opDelete:
		return encodeDelete(r.partition, r.deletes)
	default:
		return encodeDrop(r.drop)
	}
}
