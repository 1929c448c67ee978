package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

// FuzzDecodeSearch: where the fast parser answers, the strict decoder must agree with it
// exactly; DecodeSearch and DecodeBatchSearch give what DecodeJSON gives, errors
// included; and an accepted request, encoded as the client sends it, decodes back to
// itself, through the fast parser when its strings need no escapes.
func FuzzDecodeSearch(f *testing.F) {
	for _, seed := range []string{
		`{"vector":[1,2,3,4],"k":3}`,
		`{"vector":[1,2,3,4],"k":3,"ef":32,"partition":"p","allowPartial":true}`,
		`{"vector_b64":"` + EncodeB64([]float32{1, 2, 3, 4}) + `","k":1}`,
		`{"vector":[1,2,3,4],"k":0}`, `{"vector":[1,2,3,4],"k":17}`, `{"k":1}`, `{`, ``,
		` { "vector" : [ -0.5 , 1e-3 , 2E+2 , 0 ] , "k" : 2 , "allowPartial" : false } `,
		`{"K":1,"vector":[1,2,3,4]}`, `{"k":1,"k":2,"vector":[1,2,3,4]}`, `{"k":1.0,"vector":[1,2,3,4]}`,
		`{"vector":[01,2,3,4],"k":1}`, `{"vector":[1,2,3,4],"k":1,"partition":"a\"b"}`, `{"vector":[1,2,3,4],"k":1}x`,
		`{"vector":null,"k":1}`, `{"vector":[],"k":1}`, `{"vector":[1e39],"k":1}`, `{"vector":[1,2,3,4],"k":1,"partition":"ÿ"}`,
		`{"vector":[1e-7,-2.5e21,0.1],"k":-3,"ef":-1,"partition":"<&>\u2028"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var slow SearchRequest
		slowErr := DecodeJSON(bytes.NewReader(data), &slow)
		if fast, ok := fastSearch(data); ok {
			if slowErr != nil {
				t.Fatalf("fast parser accepted what the strict decoder refuses (%v): %q", slowErr, data)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("fast %+v != strict %+v for %q", fast, slow, data)
			}
		}
		var got SearchRequest
		err := DecodeSearch(data, &got)
		if !reflect.DeepEqual(err, slowErr) || err == nil && !reflect.DeepEqual(got, slow) {
			t.Fatalf("DecodeSearch gave %+v, %v; DecodeJSON %+v, %v for %q", got, err, slow, slowErr, data)
		}
		// The batch parser must agree too, on the same object wrapped in a batch.
		wrapped := append(append([]byte(`{"queries":[`), data...), "]}"...)
		var slowBatch BatchSearchRequest
		slowBatchErr := DecodeJSON(bytes.NewReader(wrapped), &slowBatch)
		if fast, ok := fastBatch(wrapped); ok {
			if slowBatchErr != nil {
				t.Fatalf("fast batch parser accepted what the strict decoder refuses (%v): %q", slowBatchErr, wrapped)
			}
			if !reflect.DeepEqual(fast, slowBatch.Queries) {
				t.Fatalf("fast batch %+v != strict %+v for %q", fast, slowBatch.Queries, wrapped)
			}
		}
		var gotBatch BatchSearchRequest
		err = DecodeBatchSearch(wrapped, &gotBatch)
		if !reflect.DeepEqual(err, slowBatchErr) || err == nil && !reflect.DeepEqual(gotBatch, slowBatch) {
			t.Fatalf("DecodeBatchSearch gave %+v, %v; DecodeJSON %+v, %v for %q", gotBatch, err, slowBatch, slowBatchErr, wrapped)
		}
		if slowErr != nil {
			return
		}
		// What the client sends of an accepted request reads back the same.
		if len(slow.Vector) == 0 {
			slow.Vector = nil // omitempty: [] is not sent
		}
		enc, err := encodeBody(&slow)
		if err != nil {
			t.Fatalf("encoding %+v: %v", slow, err)
		}
		var back SearchRequest
		if err := DecodeJSON(bytes.NewReader(enc), &back); err != nil || !reflect.DeepEqual(back, slow) {
			t.Fatalf("%+v encodes to %q, which decodes to %+v, %v", slow, enc, back, err)
		}
		if fast, ok := fastSearch(enc); ok && !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%+v encodes to %q, which the fast parser reads as %+v", slow, enc, fast)
		} else if !ok && plain(slow.VectorB64) && plain(slow.Partition) {
			t.Fatalf("the fast parser declines %q, the encoding of %+v", enc, slow)
		}
	})
}

// plain reports whether s is written in JSON without escapes.
func plain(s string) bool {
	return !strings.ContainsAny(s, "\"\\\u2028\u2029") && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 })
}

// FuzzSearchResponse: the hand-written answers decode with encoding/json to what
// encoding/json's own encoding decodes to, and a router's decodeFast reads the shard's.
func FuzzSearchResponse(f *testing.F) {
	f.Add("a1", "acme", float32(0.25), uint64(3), false, 0)
	f.Add("quote\"back\\slash\n", "", float32(-1e-30), uint64(0), true, 2)
	f.Add("\xff\u2028<&>", "p\x00", float32(3.4e38), uint64(1<<63), true, 0)
	f.Fuzz(func(t *testing.T, id, part string, dist float32, seq uint64, partial bool, missing int) {
		if dist != dist || dist > math.MaxFloat32 || dist < -math.MaxFloat32 {
			dist = 0 // the index never returns NaN; Inf is clamped, checked below
		}
		hits := []Hit{{ID: id, Distance: dist, Partition: part}, {ID: part, Distance: 1}}
		var fastBatch, slowBatch BatchSearchResponse
		batch := BatchSearchResponse{Results: [][]Hit{hits, {}, hits[:1]}, Seq: seq}
		bb := AppendBatchSearchResponse(nil, &batch)
		wantBatch, _ := json.Marshal(batch)
		if err := json.Unmarshal(bb, &fastBatch); err != nil {
			t.Fatalf("invalid JSON %q: %v", bb, err)
		}
		_ = json.Unmarshal(wantBatch, &slowBatch)
		if !reflect.DeepEqual(fastBatch, slowBatch) {
			t.Fatalf("fast batch encoding decodes to %+v, encoding/json's to %+v", fastBatch, slowBatch)
		}
		resp := SearchResponse{Results: hits, Partial: partial, Seq: seq}
		for i := range missing % 5 {
			resp.MissingShards = append(resp.MissingShards, i*(missing+1))
		}
		b := AppendSearchResponse(nil, &resp)
		var fast, slow SearchResponse
		if err := json.Unmarshal(b, &fast); err != nil {
			t.Fatalf("invalid JSON %q: %v", b, err)
		}
		want, _ := json.Marshal(resp)
		if err := json.Unmarshal(want, &slow); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("fast encoding decodes to %+v, encoding/json's to %+v", fast, slow)
		}
		var read SearchResponse
		if decodeFast(b, &read) && !reflect.DeepEqual(read, fast) {
			t.Fatalf("decodeFast reads %q as %+v, encoding/json as %+v", b, read, fast)
		}
	})
}

func TestSearchResponseClampsInfinity(t *testing.T) {
	b := AppendSearchResponse(nil, &SearchResponse{Results: []Hit{{ID: "x", Distance: float32(math.Inf(1))}}})
	var r SearchResponse
	if err := json.Unmarshal(b, &r); err != nil || r.Results[0].Distance != math.MaxFloat32 {
		t.Fatalf("%s: %+v, %v", b, r, err)
	}
}

// TestSearchResponseShape: the fields a router sets are written as encoding/json writes
// them (the floats aside), and a shard's answer in the shape decodeFast reads.
func TestSearchResponseShape(t *testing.T) {
	for _, tt := range []struct {
		resp SearchResponse
		want string
	}{
		{SearchResponse{Results: []Hit{{ID: "a", Distance: 0.5, Partition: "p"}}, Seq: 7}, `{"results":[{"id":"a","distance":0.5,"partition":"p"}],"partial":false,"seq":7}`},
		{SearchResponse{Results: []Hit{}, Partial: true, MissingShards: []int{1, 3}}, `{"results":[],"partial":true,"missingShards":[1,3]}`},
		{SearchResponse{Results: []Hit{}, MissingShards: []int{}}, `{"results":[],"partial":false}`},
	} {
		got := AppendSearchResponse(nil, &tt.resp)
		want, _ := json.Marshal(tt.resp)
		if string(got) != tt.want+"\n" || string(want) != tt.want {
			t.Errorf("%+v: wrote %s, want %s (encoding/json: %s)", tt.resp, got, tt.want, want)
		}
	}
	var r SearchResponse
	if b := AppendSearchResponse(nil, &SearchResponse{Results: []Hit{{ID: "a", Distance: 2}}, Seq: 9}); !decodeFast(b, &r) || r.Seq != 9 {
		t.Fatalf("decodeFast declines %s", b)
	}
}

// randomRequest is a search request with what a client may set, strings that need
// escapes and floats of every magnitude included.
func randomRequest(rng *rand.Rand) SearchRequest {
	str := func() string {
		const pieces = "ab0_-/=+<>&\"\\\n\x00\x1fé€\u2028\xff"
		var b strings.Builder
		runes := []rune(pieces)
		for range rng.IntN(6) {
			if rng.IntN(8) == 0 {
				b.WriteByte(0xff) // invalid UTF-8
				continue
			}
			b.WriteRune(runes[rng.IntN(len(runes))])
		}
		return b.String()
	}
	var req SearchRequest
	if rng.IntN(2) == 0 {
		req.Vector = make([]float32, rng.IntN(5))
		for i := range req.Vector {
			switch rng.IntN(4) {
			case 0:
				req.Vector[i] = float32(rng.NormFloat64())
			case 1:
				req.Vector[i] = math.Float32frombits(rng.Uint32() &^ (0xff << 23)) // subnormal or 0
			case 2:
				req.Vector[i] = float32(math.Pow(10, float64(rng.IntN(80)-40))) * float32(rng.NormFloat64())
			default:
				req.Vector[i] = math.Float32frombits(rng.Uint32())
			}
			if f := float64(req.Vector[i]); math.IsNaN(f) || math.IsInf(f, 0) {
				req.Vector[i] = float32(math.Copysign(0, f))
			}
		}
	}
	if rng.IntN(2) == 0 {
		req.VectorB64 = EncodeB64([]float32{rng.Float32(), 1, 2})
		if rng.IntN(4) == 0 {
			req.VectorB64 = str()
		}
	}
	req.K = rng.IntN(200) - 10
	if rng.IntN(2) == 0 {
		req.Ef = int(rng.Int64()) >> rng.IntN(64)
	}
	if rng.IntN(2) == 0 {
		req.Partition = str()
	}
	req.AllowPartial = rng.IntN(2) == 0
	return req
}

// TestEncodeSearchRequest: for random requests the hand encoding decodes with
// encoding/json to what json.Marshal's does, and is the same bytes but for escapes.
func TestEncodeSearchRequest(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	// encoding/json escapes <, > and & for HTML, and has short escapes for some control
	// characters; appendJSONString writes neither.
	html := strings.NewReplacer(`\\`, `\\`, `\u003c`, "<", `\u003e`, ">", `\u0026`, "&",
		`\n`, `\u000a`, `\r`, `\u000d`, `\t`, `\u0009`, `\b`, `\u0008`, `\f`, `\u000c`)
	for i := range 20000 {
		reqs := []SearchRequest{randomRequest(rng)}
		for range rng.IntN(4) {
			reqs = append(reqs, randomRequest(rng))
		}
		for _, in := range []any{&reqs[0], &BatchSearchRequest{Queries: reqs}} {
			got, err := encodeBody(in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != html.Replace(string(want)) {
				t.Fatalf("request %d: wrote %s, json.Marshal %s", i, got, want)
			}
			gotV := reflect.New(reflect.TypeOf(in).Elem())
			wantV := reflect.New(reflect.TypeOf(in).Elem())
			if err := json.Unmarshal(got, gotV.Interface()); err != nil {
				t.Fatalf("request %d: %q: %v", i, got, err)
			}
			_ = json.Unmarshal(want, wantV.Interface())
			if !reflect.DeepEqual(gotV.Interface(), wantV.Interface()) {
				t.Fatalf("request %d: %q decodes to %+v, json.Marshal's to %+v", i, got, gotV, wantV)
			}
		}
	}
	for _, in := range []any{&BatchSearchRequest{}, &BatchSearchRequest{Queries: []SearchRequest{}}, (*SearchRequest)(nil)} {
		got, err := encodeBody(in)
		want, _ := json.Marshal(in)
		if err != nil || string(got) != string(want) {
			t.Errorf("%#v: wrote %s, %v, json.Marshal %s", in, got, err, want)
		}
	}
}

// TestEncodeSearchRequestEscapes: strings that need escapes are escaped.
func TestEncodeSearchRequestEscapes(t *testing.T) {
	got, err := encodeBody(&SearchRequest{VectorB64: "a\"b\\c", K: 1, Partition: "x\n\x00\xff\u2028é"})
	want := `{"vector_b64":"a\"b\\c","k":1,"partition":"x\n\u0000\ufffd\u2028é"}`
	if err != nil || string(got) != strings.ReplaceAll(want, `\n`, `\u000a`) {
		t.Fatalf("wrote %s, %v, want %s", got, err, want)
	}
}

// TestEncodeNonFinite: a vector json.Marshal cannot encode fails the same way.
func TestEncodeNonFinite(t *testing.T) {
	for _, f := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
		for _, in := range []any{&SearchRequest{Vector: []float32{1, f}, K: 1}, &BatchSearchRequest{Queries: []SearchRequest{{K: 1}, {Vector: []float32{f}}}}} {
			_, err := encodeBody(in)
			_, want := json.Marshal(in)
			if err == nil || err.Error() != want.Error() {
				t.Errorf("%v: error %v, want %v", f, err, want)
			}
		}
	}
}

func benchRequest() SearchRequest {
	vec := make([]float32, 128)
	for i := range vec {
		vec[i] = float32(i) / 129
	}
	return SearchRequest{VectorB64: EncodeB64(vec), K: 10, Ef: 64}
}

// BenchmarkEncodeSearchRequest: what a router sends each shard per query.
func BenchmarkEncodeSearchRequest(b *testing.B) {
	req := benchRequest()
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(&req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encodeBody", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodeBody(&req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecodeSearchRequest: a client's search body of dimension 128, as JSON numbers.
func BenchmarkDecodeSearchRequest(b *testing.B) {
	req := benchRequest()
	req.Vector, _ = DecodeB64(req.VectorB64, 0)
	req.VectorB64 = ""
	body, _ := json.Marshal(&req)
	b.Run("DecodeJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r SearchRequest
			if err := DecodeJSON(bytes.NewReader(body), &r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ReadSearch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r SearchRequest
			if err := ReadSearch(bytes.NewReader(body), &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkWriteSearchResponse: a router's answer of k=10.
func BenchmarkWriteSearchResponse(b *testing.B) {
	resp := SearchResponse{Results: make([]Hit, 10)}
	for i := range resp.Results {
		resp.Results[i] = Hit{ID: fmt.Sprintf("vec-%d", 1000+i), Distance: 1.5 + float32(i)*0.137}
	}
	var buf bytes.Buffer
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf.Reset()
			if err := json.NewEncoder(&buf).Encode(&resp); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendSearchResponse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf.Reset()
			buf.Write(AppendSearchResponse(buf.AvailableBuffer(), &resp))
		}
	})
}

// FuzzJSONString: appendJSONString writes what the shard's byte-at-a-time original
// (appendJSONStringOrig) wrote, byte for byte.
func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "abc", "a\"b\\c\n\x00\x1f\x7f", "é€\u2028\u2029\xff\xe2\x80", "\ufffd<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := appendJSONString([]byte("x"), s), appendJSONStringOrig([]byte("x"), s); !bytes.Equal(got, want) {
			t.Fatalf("%q: wrote %q, want %q", s, got, want)
		}
	})
}

func appendJSONStringOrig(b []byte, s string) []byte {
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

// TestReadSearchErrors: a body over the reader's limit is payload_too_large, another
// reading error invalid input naming the reading, and both decoders agree on it.
func TestReadSearchErrors(t *testing.T) {
	tooBig := http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader(`{"k":1,"vector":[1,2,3]}`)), 4)
	var req SearchRequest
	if err := ReadSearch(tooBig, &req); !IsCode(err, CodePayloadTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	broken := io.MultiReader(strings.NewReader(`{"k":`), iotest.ErrReader(errors.New("connection reset")))
	var batch BatchSearchRequest
	err := ReadBatchSearch(broken, &batch)
	if !IsCode(err, CodeInvalidArgument) || !strings.Contains(err.Error(), "request body: reading: connection reset") {
		t.Fatalf("reading error: %v", err)
	}
}
