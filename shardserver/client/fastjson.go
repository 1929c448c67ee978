package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// Fast paths for the hottest request and answer: a search, which shards and routers
// both decode and answer. encoding/json spends more time on a search body than the graph
// walk takes on a small shard, so the common shape is parsed by hand. Anything the fast
// parser does not fully understand (escapes, repeated or unknown keys, odd numbers,
// invalid UTF-8) makes it give up, and the strict decoder (DecodeJSON) decides — it
// alone produces errors. FuzzDecodeSearch checks that both agree.

// DecodeSearch decodes the body of a search request into req exactly as DecodeJSON
// does, with the same errors, but parses the common flat shape by hand.
func DecodeSearch(b []byte, req *SearchRequest) error {
	if fast, ok := fastSearch(b); ok {
		*req = fast
		return nil
	}
	*req = SearchRequest{}
	return DecodeJSON(bytes.NewReader(b), req)
}

// DecodeBatchSearch is DecodeSearch for the body of a batch search.
func DecodeBatchSearch(b []byte, req *BatchSearchRequest) error {
	if qs, ok := fastBatch(b); ok {
		*req = BatchSearchRequest{Queries: qs}
		return nil
	}
	*req = BatchSearchRequest{}
	return DecodeJSON(bytes.NewReader(b), req)
}

// ReadSearch reads a search request body whole (into a pooled buffer) and decodes it
// with DecodeSearch. A body over an http.MaxBytesReader's limit is CodePayloadTooLarge,
// as DecodeJSON words it; any other reading error is invalid input.
func ReadSearch(body io.Reader, req *SearchRequest) error {
	return readWith(body, func(b []byte) error { return DecodeSearch(b, req) })
}

// ReadBatchSearch is ReadSearch for a batch search.
func ReadBatchSearch(body io.Reader, req *BatchSearchRequest) error {
	return readWith(body, func(b []byte) error { return DecodeBatchSearch(b, req) })
}

func readWith(body io.Reader, decode func([]byte) error) error {
	buf := getBuffer()
	defer putBuffer(buf)
	if _, err := buf.ReadFrom(body); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return jsonError(err)
		}
		return invalid("request body: reading: %v", err)
	}
	return decode(buf.Bytes())
}

// fastSearch parses a flat search object; ok is false when it cannot be sure.
func fastSearch(b []byte) (SearchRequest, bool) {
	p := fastParser{b: b}
	req, ok := p.search()
	return req, ok && p.end()
}

// fastBatch parses {"queries":[...]} of flat search objects.
func fastBatch(b []byte) ([]SearchRequest, bool) {
	p := fastParser{b: b}
	if !p.skipByte('{') {
		return nil, false
	}
	if key, ok := p.str(); !ok || string(key) != "queries" || !p.skipByte(':') || !p.skipByte('[') {
		return nil, false
	}
	out := make([]SearchRequest, 0, 16)
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
func (p *fastParser) search() (req SearchRequest, ok bool) {
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

// AppendSearchResponse appends the JSON of a search answer and a newline: the document
// encoding/json writes, but for float formatting, HTML characters left unescaped (both
// valid JSON) and a nil Results, written as [] (an answer always holds a list). A
// non-finite distance, which encoding/json refuses, is clamped (see appendHits).
func AppendSearchResponse(b []byte, r *SearchResponse) []byte {
	b = append(b, `{"results":`...)
	b = appendHits(b, r.Results)
	if r.Partial {
		b = append(b, `,"partial":true`...)
	} else {
		b = append(b, `,"partial":false`...)
	}
	if len(r.MissingShards) > 0 {
		b = append(b, `,"missingShards":[`...)
		for i, k := range r.MissingShards {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(k), 10)
		}
		b = append(b, ']')
	}
	return appendSeqEnd(b, r.Seq)
}

// AppendBatchSearchResponse appends the JSON of a batch search answer and a newline, as
// AppendSearchResponse does (nil lists are written as []).
func AppendBatchSearchResponse(b []byte, r *BatchSearchResponse) []byte {
	b = append(b, `{"results":[`...)
	for i, hits := range r.Results {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendHits(b, hits)
	}
	b = append(b, ']')
	return appendSeqEnd(b, r.Seq)
}

// appendSeqEnd closes an answer object: its seq when set, then the brace and a newline.
func appendSeqEnd(b []byte, seq uint64) []byte {
	if seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, seq, 10)
	}
	return append(b, "}\n"...)
}

// appendHits appends a JSON list of hits (nil as []). A NaN distance is written as 0 and
// an infinite one as ±math.MaxFloat32: the index does not return them, and a JSON
// answer cannot carry them.
func appendHits(b []byte, hits []Hit) []byte {
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

// appendJSONString quotes s for JSON; invalid UTF-8 becomes U+FFFD as in encoding/json,
// which also escapes <, > and & (for HTML): decoded, both are the same string.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0 // s[start:i] is yet to append, as it is
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			if c < 0x20 {
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			} else {
				b = append(b, '\\', c)
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// encodeBody is json.Marshal(in), with search requests (a router sends one per shard
// and query) written by hand.
func encodeBody(in any) ([]byte, error) {
	switch v := in.(type) {
	case *SearchRequest:
		if v != nil {
			if b, ok := appendSearchRequest(make([]byte, 0, searchRequestSize(v)), v); ok {
				return b, nil
			}
		}
	case *BatchSearchRequest:
		if v != nil {
			n := 16
			for i := range v.Queries {
				n += searchRequestSize(&v.Queries[i])
			}
			if b, ok := appendBatchSearchRequest(make([]byte, 0, n), v); ok {
				return b, nil
			}
		}
	}
	return json.Marshal(in)
}

// searchRequestSize is the length of req's JSON unless its strings need escapes.
func searchRequestSize(req *SearchRequest) int {
	return 80 + len(req.VectorB64) + len(req.Partition) + 16*len(req.Vector)
}

// appendBatchSearchRequest appends what json.Marshal writes for req (see
// appendSearchRequest); ok is false if a vector has a non-finite component.
func appendBatchSearchRequest(b []byte, req *BatchSearchRequest) (_ []byte, ok bool) {
	if req.Queries == nil {
		return append(b, `{"queries":null}`...), true
	}
	b = append(b, `{"queries":[`...)
	for i := range req.Queries {
		if i > 0 {
			b = append(b, ',')
		}
		if b, ok = appendSearchRequest(b, &req.Queries[i]); !ok {
			return nil, false
		}
	}
	return append(b, "]}"...), true
}

// appendSearchRequest appends what json.Marshal writes for req, the fields its tags
// omit when empty left out, but for <, > and & in strings, which are left unescaped
// (decoded, the same string). ok is false if the vector has a non-finite component,
// which json.Marshal refuses.
func appendSearchRequest(b []byte, req *SearchRequest) (_ []byte, ok bool) {
	b = append(b, '{')
	if len(req.Vector) > 0 {
		b = append(b, `"vector":[`...)
		for i, f := range req.Vector {
			if i > 0 {
				b = append(b, ',')
			}
			if b, ok = appendFloat32(b, f); !ok {
				return nil, false
			}
		}
		b = append(b, "],"...)
	}
	if req.VectorB64 != "" {
		b = append(b, `"vector_b64":`...)
		b = appendJSONString(b, req.VectorB64)
		b = append(b, ',')
	}
	b = append(b, `"k":`...)
	b = strconv.AppendInt(b, int64(req.K), 10)
	if req.Ef != 0 {
		b = append(b, `,"ef":`...)
		b = strconv.AppendInt(b, int64(req.Ef), 10)
	}
	if req.Partition != "" {
		b = append(b, `,"partition":`...)
		b = appendJSONString(b, req.Partition)
	}
	if req.AllowPartial {
		b = append(b, `,"allowPartial":true`...)
	}
	return append(b, '}'), true
}

// appendFloat32 formats f as encoding/json does: the shortest decimal that reads back
// as f, in exponent form below 1e-6 and from 1e21 on.
func appendFloat32(b []byte, f float32) ([]byte, bool) {
	if f != f || math.IsInf(float64(f), 0) {
		return nil, false
	}
	abs := math.Abs(float64(f))
	format := byte('f')
	if abs != 0 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, float64(f), format, -1, 32)
	if format == 'e' {
		// e-09 is e-9, as encoding/json writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, true
}
