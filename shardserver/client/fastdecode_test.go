package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// shardShape writes hits the way the shard server does (AppendSearchResponse, client/fastjson.go).
func shardShape(hits []Hit, seq uint64, batch int) []byte {
	var b bytes.Buffer
	list := func() {
		b.WriteString("[")
		for i, h := range hits {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"id":%q,"distance":%v`, h.ID, h.Distance)
			if h.Partition != "" {
				fmt.Fprintf(&b, `,"partition":%q`, h.Partition)
			}
			b.WriteString("}")
		}
		b.WriteString("]")
	}
	if batch == 0 {
		b.WriteString(`{"results":`)
		list()
		b.WriteString(`,"partial":false`)
	} else {
		b.WriteString(`{"results":[`)
		for i := range batch {
			if i > 0 {
				b.WriteString(",")
			}
			list()
		}
		b.WriteString("]")
	}
	if seq != 0 {
		fmt.Fprintf(&b, `,"seq":%d`, seq)
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// TestDecodeFastMatchesJSON: on the shard's shape the fast path decodes exactly what
// encoding/json does; on any other valid document it declines (and decodeBody then
// gives encoding/json's answer), and it never accepts a broken one.
func TestDecodeFastMatchesJSON(t *testing.T) {
	hits := []Hit{{ID: "a1", Distance: 0.125}, {ID: "b", Distance: 3.5e-07, Partition: "acme"}, {ID: "c-ü", Distance: -2}}
	docs := map[string][]byte{
		"search":       shardShape(hits, 812, 0),
		"search noseq": shardShape(hits, 0, 0),
		"search empty": shardShape(nil, 3, 0),
		"batch":        shardShape(hits, 9, 3),
		"batch empty":  []byte(`{"results":[]}` + "\n"),
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			var out any = new(SearchResponse)
			var want any = new(SearchResponse)
			if bytes.HasPrefix([]byte(name), []byte("batch")) {
				out, want = new(BatchSearchResponse), new(BatchSearchResponse)
			}
			if !decodeFast(doc, out) {
				t.Fatalf("fast path declined %s", doc)
			}
			if err := json.Unmarshal(doc, want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(out, want) {
				t.Fatalf("fast %+v, encoding/json %+v", out, want)
			}
		})
	}
	for _, doc := range []string{
		`{"results": [], "partial": false}`,                        // spaces
		`{"partial":false,"results":[]}`,                           // order
		`{"results":[{"id":"a\"b","distance":1}],"partial":false}`, // escape
		`{"results":[{"distance":1,"id":"a"}],"partial":false}`,
		`{"results":[],"partial":false,"missingShards":[1]}`,
	} {
		var fast, slow SearchResponse
		if decodeFast([]byte(doc), &fast) {
			t.Fatalf("fast path accepted %s", doc)
		}
		if err := decodeBody(bytes.NewReader([]byte(doc)), &fast); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(doc), &slow); err != nil || !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%s: decodeBody %+v, encoding/json %+v (%v)", doc, fast, slow, err)
		}
	}
	for _, doc := range []string{`{"results":[{"id":"a","distance":}],"partial":false}`, `{"results":[`, `{"results":[],"partial":false}x`, ``} {
		var r SearchResponse
		if decodeFast([]byte(doc), &r) {
			t.Fatalf("fast path accepted broken %q", doc)
		}
	}
}

// BenchmarkDecodeSearch compares encoding/json with decodeBody on a shard's answer of
// k=10 (the router decodes one per shard and query).
func BenchmarkDecodeSearch(b *testing.B) {
	var hits []Hit
	for i := range 10 {
		hits = append(hits, Hit{ID: fmt.Sprintf("vec-%d", 1000+i), Distance: 1.5 + float32(i)*0.137})
	}
	doc := shardShape(hits, 4242, 0)
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r SearchResponse
			if err := json.NewDecoder(bytes.NewReader(doc)).Decode(&r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decodeBody", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r SearchResponse
			if err := decodeBody(bytes.NewReader(doc), &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzDecodeFast: a router decodes every shard's answer with decodeFast first. On any
// bytes it must not panic, and whatever it accepts encoding/json must accept and
// decode to the same value, so the fast path never answers differently.
func FuzzDecodeFast(f *testing.F) {
	hits := []Hit{{ID: "a1", Distance: 0.125}, {ID: "b", Distance: 3.5e-07, Partition: "acme"}}
	for _, doc := range [][]byte{shardShape(hits, 812, 0), shardShape(nil, 0, 0), shardShape(hits, 9, 2),
		[]byte(`{"results":[]}`), []byte(`{"results":[{"id":"a","distance":1e39}],"partial":false}`),
		[]byte(`{"results":[{"id":"a","distance":-0}],"partial":true,"seq":18446744073709551615}`),
		[]byte(`{"results":[{"id":"a","distance":1}],"partial":false,"seq":18446744073709551616}`)} {
		f.Add(doc)
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		for _, pair := range [][2]any{{new(SearchResponse), new(SearchResponse)}, {new(BatchSearchResponse), new(BatchSearchResponse)}} {
			fast, slow := pair[0], pair[1]
			if !decodeFast(doc, fast) {
				continue
			}
			if err := json.Unmarshal(doc, slow); err != nil {
				t.Fatalf("fast path accepted %q, encoding/json refuses it: %v", doc, err)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%q: fast %+v, encoding/json %+v", doc, fast, slow)
			}
		}
	})
}
