package shard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"unicode/utf8"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/slots"
)

// MaxIDBytes bounds ids and partitions: the WAL encodes their length in 16 bits, and
// nobody needs a longer key.
const MaxIDBytes = 256

// Limits bound what one request may ask for; anything over is a 4xx, never a partial
// answer.
type Limits struct {
	MaxBodyBytes int64 // request body size; over it -> 413 payload_too_large
	MaxBatch     int   // vectors per upsert, ids per delete, queries per batch search
	MaxK         int   // k of a search
	MaxEf        int   // ef of a search
}

// schema is what the decoders check vectors against.
type schema struct {
	dim    int
	metric hnsw.Metric
	lim    Limits
}

func invalid(format string, args ...any) *client.APIError {
	return &client.APIError{Code: client.CodeInvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// decodeJSON decodes exactly one JSON value from body into v, refusing unknown fields.
func decodeJSON(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		if err != nil {
			return jsonError(err)
		}
		return invalid("request body holds more than one JSON value")
	}
	return nil
}

func jsonError(err error) error {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &client.APIError{Code: client.CodePayloadTooLarge,
			Message: fmt.Sprintf("request body over %d bytes", tooBig.Limit)}
	}
	return invalid("malformed JSON: %v", err)
}

func checkID(what, id string) error {
	switch {
	case id == "":
		return invalid("%s: empty id", what)
	case len(id) > MaxIDBytes:
		return invalid("%s: id of %d bytes, the limit is %d", what, len(id), MaxIDBytes)
	case !utf8.ValidString(id):
		return invalid("%s: id is not valid UTF-8", what)
	}
	return nil
}

func checkPartition(what, p string) error {
	if len(p) > MaxIDBytes {
		return invalid("%s: partition of %d bytes, the limit is %d", what, len(p), MaxIDBytes)
	}
	if !utf8.ValidString(p) {
		return invalid("%s: partition is not valid UTF-8", what)
	}
	return nil
}

// vectorOf returns the vector given either as a JSON array or as vector_b64, checked for
// dimension, finiteness and (for Cosine) a non-zero norm.
func (sc *schema) vectorOf(what string, vec []float32, b64 string) ([]float32, error) {
	switch {
	case len(vec) > 0 && b64 != "":
		return nil, invalid("%s: give vector or vector_b64, not both", what)
	case b64 != "":
		v, err := client.DecodeB64(b64, sc.dim)
		if err != nil {
			return nil, invalid("%s: %v", what, err)
		}
		vec = v
	case len(vec) == 0:
		return nil, invalid("%s: missing vector", what)
	}
	if len(vec) != sc.dim {
		return nil, invalid("%s: vector has dimension %d, the index has %d", what, len(vec), sc.dim)
	}
	var norm float64
	for i, f := range vec {
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return nil, invalid("%s: component %d is %v", what, i, f)
		}
		norm += float64(f) * float64(f)
	}
	if sc.metric == hnsw.Cosine && norm == 0 {
		return nil, invalid("%s: a zero vector has no direction (metric Cosine)", what)
	}
	return vec, nil
}

// decodeUpsert reads and validates a whole upsert batch; nothing is applied unless all
// of it is valid. Ids must be unique within a batch, so the result never depends on order.
func (sc *schema) decodeUpsert(body io.Reader) ([]upsertItem, error) {
	var req client.UpsertRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if len(req.Vectors) == 0 {
		return nil, invalid("vectors: empty batch")
	}
	if len(req.Vectors) > sc.lim.MaxBatch {
		return nil, invalid("vectors: %d in one batch, the limit is %d", len(req.Vectors), sc.lim.MaxBatch)
	}
	items := make([]upsertItem, len(req.Vectors))
	seen := make(map[string]int, len(req.Vectors))
	for i, v := range req.Vectors {
		what := fmt.Sprintf("vectors[%d]", i)
		if err := checkID(what, v.ID); err != nil {
			return nil, err
		}
		if j, dup := seen[v.ID]; dup {
			return nil, invalid("%s: id %q repeats vectors[%d]", what, v.ID, j)
		}
		seen[v.ID] = i
		if err := checkPartition(what, v.Partition); err != nil {
			return nil, err
		}
		vec, err := sc.vectorOf(what, v.Vector, v.VectorB64)
		if err != nil {
			return nil, err
		}
		items[i] = upsertItem{id: v.ID, partition: v.Partition, vec: vec, slot: slots.Of(slots.KeyOf(v.ID, v.Partition))}
	}
	return items, nil
}

// decodeDelete reads and validates a batch delete.
func (sc *schema) decodeDelete(body io.Reader) (client.DeleteRequest, error) {
	var req client.DeleteRequest
	if err := decodeJSON(body, &req); err != nil {
		return req, err
	}
	if len(req.IDs) == 0 {
		return req, invalid("ids: empty batch")
	}
	if len(req.IDs) > sc.lim.MaxBatch {
		return req, invalid("ids: %d in one batch, the limit is %d", len(req.IDs), sc.lim.MaxBatch)
	}
	for i, id := range req.IDs {
		if err := checkID(fmt.Sprintf("ids[%d]", i), id); err != nil {
			return req, err
		}
	}
	return req, checkPartition("partition", req.Partition)
}

// query is a validated search.
type query struct {
	vec       []float32
	k, ef     int
	partition string
}

func (sc *schema) checkQuery(what string, req *client.SearchRequest) (query, error) {
	if req.K < 1 || req.K > sc.lim.MaxK {
		return query{}, invalid("%s: k is %d, want 1..%d", what, req.K, sc.lim.MaxK)
	}
	if req.Ef < 0 || req.Ef > sc.lim.MaxEf {
		return query{}, invalid("%s: ef is %d, want 0 (default) or up to %d", what, req.Ef, sc.lim.MaxEf)
	}
	if err := checkPartition(what, req.Partition); err != nil {
		return query{}, err
	}
	vec, err := sc.vectorOf(what, req.Vector, req.VectorB64)
	if err != nil {
		return query{}, err
	}
	return query{vec: vec, k: req.K, ef: req.Ef, partition: req.Partition}, nil
}

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// getBody returns an empty buffer from bodyPool.
func getBody() *bytes.Buffer {
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	return buf
}

// putBody returns buf to bodyPool, unless it grew past 1 MiB: the pool would keep the
// memory of one outsized body alive.
func putBody(buf *bytes.Buffer) {
	if buf.Cap() <= 1<<20 {
		bodyPool.Put(buf)
	}
}

// readBody reads a whole body into a pooled buffer; release returns it.
func readBody(body io.Reader) (b []byte, release func(), err error) {
	buf := getBody()
	release = func() { putBody(buf) }
	if _, err := buf.ReadFrom(body); err != nil {
		release()
		return nil, nil, jsonError(err)
	}
	return buf.Bytes(), release, nil
}

// decodeSearch reads and validates one search: the hand-written parser when it can,
// else encoding/json (see fastjson.go).
func (sc *schema) decodeSearch(body io.Reader) (query, error) {
	b, release, err := readBody(body)
	if err != nil {
		return query{}, err
	}
	defer release()
	req, ok := fastSearch(b)
	if !ok {
		req = client.SearchRequest{}
		if err := decodeJSON(bytes.NewReader(b), &req); err != nil {
			return query{}, err
		}
	}
	return sc.checkQuery("query", &req)
}

// decodeBatchSearch reads and validates a batch of searches.
func (sc *schema) decodeBatchSearch(body io.Reader) ([]query, error) {
	b, release, err := readBody(body)
	if err != nil {
		return nil, err
	}
	defer release()
	var req client.BatchSearchRequest
	var ok bool
	if req.Queries, ok = fastBatch(b); !ok {
		req = client.BatchSearchRequest{}
		if err := decodeJSON(bytes.NewReader(b), &req); err != nil {
			return nil, err
		}
	}
	if len(req.Queries) == 0 {
		return nil, invalid("queries: empty batch")
	}
	if len(req.Queries) > sc.lim.MaxBatch {
		return nil, invalid("queries: %d in one batch, the limit is %d", len(req.Queries), sc.lim.MaxBatch)
	}
	out := make([]query, len(req.Queries))
	for i := range req.Queries {
		q, err := sc.checkQuery(fmt.Sprintf("queries[%d]", i), &req.Queries[i])
		if err != nil {
			return nil, err
		}
		out[i] = q
	}
	return out, nil
}
