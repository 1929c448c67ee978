package shard

import (
	"bytes"
	"fmt"
	"io"
	"sync"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/slots"
)

// MaxIDBytes bounds ids and partitions (client.MaxIDBytes, the rule both the shard and
// the router enforce).
const MaxIDBytes = client.MaxIDBytes

// Limits bound what one request may ask for; anything over is a 4xx, never a partial
// answer.
type Limits struct {
	MaxBodyBytes int64 // request body size; over it -> 413 payload_too_large
	MaxBatch     int   // vectors per upsert, ids per delete, queries per batch search
	MaxK         int   // k of a search
	MaxEf        int   // ef of a search
}

// schema is what the decoders check requests against: the rules of client.Schema, which
// the load report also publishes for the router.
type schema struct{ client.Schema }

func newSchema(dim int, metric hnsw.Metric, lim Limits) schema {
	return schema{client.Schema{Dimension: dim, Metric: metric.String(), MaxBatch: lim.MaxBatch,
		MaxK: lim.MaxK, MaxEf: lim.MaxEf, MaxBodyBytes: lim.MaxBodyBytes}}
}

func invalid(format string, args ...any) *client.APIError {
	return &client.APIError{Code: client.CodeInvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// decodeJSON decodes the one JSON value of body into v strictly (client.DecodeJSON).
func decodeJSON(body io.Reader, v any) error { return client.DecodeJSON(body, v) }

// decodeUpsert reads and validates a whole upsert batch; nothing is applied unless all
// of it is valid. Ids must be unique within a batch, so the result never depends on order.
func (sc *schema) decodeUpsert(body io.Reader) ([]upsertItem, error) {
	var req client.UpsertRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	vecs, err := sc.CheckUpsert(&req)
	if err != nil {
		return nil, err
	}
	items := make([]upsertItem, len(req.Vectors))
	for i, v := range req.Vectors {
		items[i] = upsertItem{id: v.ID, partition: v.Partition, vec: vecs[i], slot: slots.Of(slots.KeyOf(v.ID, v.Partition))}
	}
	return items, nil
}

// decodeDelete reads and validates a batch delete.
func (sc *schema) decodeDelete(body io.Reader) (client.DeleteRequest, error) {
	var req client.DeleteRequest
	if err := decodeJSON(body, &req); err != nil {
		return req, err
	}
	return req, sc.CheckDelete(&req)
}

// query is a validated search.
type query struct {
	vec       []float32
	k, ef     int
	partition string
}

func newQuery(req *client.SearchRequest, vec []float32) query {
	return query{vec: vec, k: req.K, ef: req.Ef, partition: req.Partition}
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

// decodeSearch reads and validates one search: the hand-written parser when it can,
// else the strict decoder (client.DecodeSearch).
func (sc *schema) decodeSearch(body io.Reader) (query, error) {
	var req client.SearchRequest
	if err := client.ReadSearch(body, &req); err != nil {
		return query{}, err
	}
	vec, err := sc.CheckSearch("", &req)
	if err != nil {
		return query{}, err
	}
	return newQuery(&req, vec), nil
}

// decodeBatchSearch reads and validates a batch of searches.
func (sc *schema) decodeBatchSearch(body io.Reader) ([]query, error) {
	var req client.BatchSearchRequest
	if err := client.ReadBatchSearch(body, &req); err != nil {
		return nil, err
	}
	vecs, err := sc.CheckBatchSearch(&req)
	if err != nil {
		return nil, err
	}
	out := make([]query, len(req.Queries))
	for i := range req.Queries {
		out[i] = newQuery(&req.Queries[i], vecs[i])
	}
	return out, nil
}
