package client

import (
	"math"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// Fast decoding of search answers. A router decodes one answer per shard and query,
// and encoding/json, which reflects over the types and allocates as it scans, was a
// fifth of a router's CPU (make bench-e2e -profile). decodeFast reads the exact shape
// the shard server writes (AppendSearchResponse in fastjson.go: keys in that order, no
// spaces, strings without escapes) in one pass; anything else, however valid, makes it
// give up, and the caller decodes with encoding/json, so it never decodes differently,
// only faster.

// decodeFast decodes b into out when out is a *SearchResponse or *BatchSearchResponse
// written in the shard's shape, and reports whether it did (out is then complete).
func decodeFast(b []byte, out any) bool {
	p := parser{b: b}
	switch v := out.(type) {
	case *SearchResponse:
		var r SearchResponse
		if !p.lit(`{"results":`) || !p.hits(&r.Results) || !p.lit(`,"partial":`) {
			return false
		}
		switch {
		case p.lit("false"):
		case p.lit("true"):
			r.Partial = true
		default:
			return false
		}
		if !p.seq(&r.Seq) || !p.end() {
			return false
		}
		*v = r
		return true
	case *BatchSearchResponse:
		var r BatchSearchResponse
		if !p.lit(`{"results":[`) {
			return false
		}
		for !p.lit("]") {
			if len(r.Results) > 0 && !p.lit(",") {
				return false
			}
			var hits []Hit
			if !p.hits(&hits) {
				return false
			}
			r.Results = append(r.Results, hits)
		}
		if !p.seq(&r.Seq) || !p.end() {
			return false
		}
		if r.Results == nil {
			r.Results = [][]Hit{}
		}
		*v = r
		return true
	}
	return false
}

type parser struct {
	b []byte
	i int
}

// lit consumes s if the input continues with it.
func (p *parser) lit(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// str reads a string without escapes, of valid UTF-8 (encoding/json replaces invalid
// bytes, so it declines those).
func (p *parser) str() (string, bool) {
	if !p.lit(`"`) {
		return "", false
	}
	start, ascii := p.i, true
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			if !ascii && !utf8.Valid(p.b[start:p.i]) {
				return "", false
			}
			s := string(p.b[start:p.i])
			p.i++
			return s, true
		case c == '\\' || c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// number returns the bytes of a JSON number, or nil if they are not one (strconv takes
// forms JSON does not: "+1", "01", ".5", "1.").
func (p *parser) number() []byte {
	start := p.i
	digits := func() bool {
		from := p.i
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
		}
		return p.i > from
	}
	p.lit("-")
	switch {
	case p.lit("0"):
	case !digits():
		return nil
	}
	if p.lit(".") && !digits() {
		return nil
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if !p.lit("+") {
			p.lit("-")
		}
		if !digits() {
			return nil
		}
	}
	return p.b[start:p.i]
}

// hits reads [{"id":..,"distance":..[,"partition":..]},...] into a new slice.
func (p *parser) hits(out *[]Hit) bool {
	if !p.lit("[") {
		return false
	}
	hits := make([]Hit, 0, 16) // most answers are a small k: one allocation
	for !p.lit("]") {
		if len(hits) > 0 && !p.lit(",") {
			return false
		}
		var h Hit
		var ok bool
		if !p.lit(`{"id":`) {
			return false
		}
		if h.ID, ok = p.str(); !ok || !p.lit(`,"distance":`) {
			return false
		}
		num := p.number()
		if len(num) == 0 {
			return false
		}
		d, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(num), len(num)), 32)
		if err != nil || math.IsInf(d, 0) {
			return false
		}
		h.Distance = float32(d)
		if p.lit(`,"partition":`) {
			if h.Partition, ok = p.str(); !ok {
				return false
			}
		}
		if !p.lit("}") {
			return false
		}
		hits = append(hits, h)
	}
	*out = hits
	return true
}

// seq reads an optional ,"seq":N.
func (p *parser) seq(out *uint64) bool {
	if !p.lit(`,"seq":`) {
		return true
	}
	num := p.number()
	v, err := strconv.ParseUint(unsafe.String(unsafe.SliceData(num), len(num)), 10, 64)
	*out = v
	return err == nil && len(num) > 0
}

// end consumes the closing brace and a trailing newline, and nothing may follow.
func (p *parser) end() bool {
	if !p.lit("}") {
		return false
	}
	p.lit("\n")
	return p.i == len(p.b)
}
