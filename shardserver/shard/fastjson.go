package shard

import (
	"bytes"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/annshard/annshard/shardserver/client"
)

// Fast paths for the hottest request and answer: a search. encoding/json spends more
// time on a search body than the graph walk takes on a small shard, so the common
// shape is parsed by hand. Anything the fast parser does not fully understand (escapes,
// repeated or unknown keys, odd numbers, invalid UTF-8) makes it give up, and the strict
// decoder (client.DecodeJSON) decides — it alone produces errors. FuzzDecodeSearch checks
// that both agree.

// fastSearch parses a flat search object; ok is false when it cannot be sure.
func fastSearch(b []byte) (client.SearchRequest, bool) {
	p := fastParser{b: b}
	req, ok := p.search()
	return req, ok && p.end()
}

// fastBatch parses {"queries":[...]} of flat search objects.
func fastBatch(b []byte) ([]client.SearchRequest, bool) {
	p := fastParser{b: b}
	if !p.skipByte('{') {
		return nil, false
	}
	if key, ok := p.str(); !ok || string(key) != "queries" || !p.skipByte(':') || !p.skipByte('[') {
		return nil, false
	}
	out := make([]client.SearchRequest, 0, 16)
	if !p.skipByte(']') {
		for {
			req, ok := p.search()
			if !ok {
				return nil, false
			}
			out = append(out, req)
			if p.skipByte(',') {
				continue
			}
			if p.skipByte(']') {
				break
			}
			return nil, false
		}
	}
	return out, p.skipByte('}') && p.end()
}

// search parses one flat search object.
func (p *fastParser) search() (req client.SearchRequest, ok bool) {
	if !p.skipByte('{') {
		return req, false
	}
	var seen [6]bool
	if p.skipByte('}') {
		return req, true
	}
	for {
		key, ok := p.str()
		if !ok || !p.skipByte(':') {
			return req, false
		}
		slot := -1
		switch string(key) {
		case "vector":
			slot = 0
			if req.Vector, ok = p.floats(); !ok {
				return req, false
			}
		case "vector_b64":
			slot = 1
			s, ok := p.str()
			if !ok {
				return req, false
			}
			req.VectorB64 = string(s)
		case "k":
			slot = 2
			if req.K, ok = p.int(); !ok {
				return req, false
			}
		case "ef":
			slot = 3
			if req.Ef, ok = p.int(); !ok {
				return req, false
			}
		case "partition":
			slot = 4
			s, ok := p.str()
			if !ok {
				return req, false
			}
			req.Partition = string(s)
		case "allowPartial":
			slot = 5
			if req.AllowPartial, ok = p.bool(); !ok {
				return req, false
			}
		default:
			return req, false
		}
		if seen[slot] {
			return req, false
		}
		seen[slot] = true
		if p.skipByte(',') {
			continue
		}
		return req, p.skipByte('}')
	}
}

type fastParser struct {
	b []byte
	i int
}

func (p *fastParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *fastParser) skipByte(c byte) bool {
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (p *fastParser) end() bool {
	p.ws()
	return p.i == len(p.b)
}

// str reads a string without escapes or control characters, in valid UTF-8.
func (p *fastParser) str() ([]byte, bool) {
	if !p.skipByte('"') {
		return nil, false
	}
	end := bytes.IndexByte(p.b[p.i:], '"')
	if end < 0 {
		return nil, false
	}
	s := p.b[p.i : p.i+end]
	p.i += end + 1
	for _, c := range s {
		if c == '\\' || c < 0x20 {
			return nil, false
		}
	}
	return s, utf8.Valid(s)
}

// number returns the bytes of a JSON number (checked by the caller's parse).
func (p *fastParser) number() []byte {
	p.ws()
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			p.i++
			continue
		}
		break
	}
	return p.b[start:p.i]
}

// validNumber is the JSON number grammar, which strconv is laxer than.
func validNumber(s []byte) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i == len(s) || s[i] < '0' || s[i] > '9' {
			return false
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i == len(s) || s[i] < '0' || s[i] > '9' {
			return false
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	return i == len(s)
}

func (p *fastParser) int() (int, bool) {
	s := p.number()
	if !validNumber(s) {
		return 0, false
	}
	n, err := strconv.ParseInt(string(s), 10, 64) // fractions and exponents fail: slow path
	if err != nil || n != int64(int(n)) {
		return 0, false
	}
	return int(n), true
}

func (p *fastParser) bool() (bool, bool) {
	p.ws()
	switch {
	case len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "true":
		p.i += 4
		return true, true
	case len(p.b)-p.i >= 5 && string(p.b[p.i:p.i+5]) == "false":
		p.i += 5
		return false, true
	}
	return false, false
}

func (p *fastParser) floats() ([]float32, bool) {
	if !p.skipByte('[') {
		return nil, false
	}
	out := make([]float32, 0, 128)
	if p.skipByte(']') {
		return out, true
	}
	for {
		s := p.number()
		if !validNumber(s) {
			return nil, false
		}
		f, err := strconv.ParseFloat(string(s), 32)
		if err != nil { // out of float32 range: the strict decoder words the error
			return nil, false
		}
		out = append(out, float32(f))
		if p.skipByte(',') {
			continue
		}
		if p.skipByte(']') {
			return out, true
		}
		return nil, false
	}
}

// appendBatchResponse writes the JSON of a batch search answer.
func appendBatchResponse(b []byte, results [][]client.Hit, seq uint64) []byte {
	b = append(b, `{"results":[`...)
	for i, hits := range results {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendHits(b, hits)
	}
	b = append(b, ']')
	if seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, seq, 10)
	}
	return append(b, "}\n"...)
}

// appendSearchResponse writes the JSON of a search answer, the same document
// encoding/json would write (but for float formatting and HTML escaping, both valid).
func appendSearchResponse(b []byte, hits []client.Hit, seq uint64) []byte {
	b = append(b, `{"results":`...)
	b = appendHits(b, hits)
	b = append(b, `,"partial":false`...)
	if seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, seq, 10)
	}
	return append(b, "}\n"...)
}

func appendHits(b []byte, hits []client.Hit) []byte {
	b = append(b, '[')
	for i, h := range hits {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = appendJSONString(b, h.ID)
		b = append(b, `,"distance":`...)
		d := float64(h.Distance)
		switch {
		case math.IsNaN(d):
			d = 0
		case math.IsInf(d, 1):
			d = math.MaxFloat32
		case math.IsInf(d, -1):
			d = -math.MaxFloat32
		}
		b = strconv.AppendFloat(b, d, 'g', -1, 32)
		if h.Partition != "" {
			b = append(b, `,"partition":`...)
			b = appendJSONString(b, h.Partition)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s for JSON; invalid UTF-8 becomes U+FFFD as in encoding/json.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
