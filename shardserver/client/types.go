package client

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// SeqHeader carries a WAL sequence number: on answers to GET /v1/vectors/{id}, the
// shard's applied seq as of the lookup; on a replication snapshot, the seq it includes.
const SeqHeader = "X-Annshard-Seq"

// TokenHeader carries the write token where the Authorization header cannot: through
// the Kubernetes API server's service proxy, which authenticates the caller with that
// header and removes it. Routers accept the token in either.
const TokenHeader = "X-Annshard-Token"

// Vector is one stored vector. Exactly one of Vector and VectorB64 is set on the wire.
type Vector struct {
	ID        string    `json:"id"`
	Vector    []float32 `json:"vector,omitempty"`
	VectorB64 string    `json:"vector_b64,omitempty"`
	Partition string    `json:"partition,omitempty"`
}

// UpsertRequest is the body of POST /v1/vectors. The batch is applied all or nothing.
type UpsertRequest struct {
	Vectors []Vector `json:"vectors"`
}

// UpsertResponse answers an upsert once it is durable; Seq is the shard's WAL sequence
// number of the batch.
type UpsertResponse struct {
	Upserted int    `json:"upserted"`
	Seq      uint64 `json:"seq"`
}

// DeleteRequest is the body of POST /v1/vectors:delete. Partition, when set, tells the
// router which shard holds the ids; a shard checks it against what it stores.
type DeleteRequest struct {
	IDs       []string `json:"ids"`
	Partition string   `json:"partition,omitempty"`
}

// DeleteResponse answers a batch delete: how many of the ids existed and were removed.
type DeleteResponse struct {
	Deleted int    `json:"deleted"`
	Seq     uint64 `json:"seq"`
}

// DeleteOneResponse answers DELETE /v1/vectors/{id}.
type DeleteOneResponse struct {
	Deleted bool   `json:"deleted"`
	Seq     uint64 `json:"seq"`
}

// SearchRequest is one k-nearest-neighbour query. Ef 0 means the server's default;
// Partition restricts the answer to one partition's vectors.
type SearchRequest struct {
	Vector       []float32 `json:"vector,omitempty"`
	VectorB64    string    `json:"vector_b64,omitempty"`
	K            int       `json:"k"`
	Ef           int       `json:"ef,omitempty"`
	Partition    string    `json:"partition,omitempty"`
	AllowPartial bool      `json:"allowPartial,omitempty"`
}

// Hit is one search result, nearest first.
type Hit struct {
	ID        string  `json:"id"`
	Distance  float32 `json:"distance"`
	Partition string  `json:"partition,omitempty"`
}

// SearchResponse answers a search. Partial and MissingShards are set by the router when
// AllowPartial let it answer without every shard. Seq is the shard's applied WAL sequence
// number when it answered, so a cache can tell stale entries.
type SearchResponse struct {
	Results       []Hit  `json:"results"`
	Partial       bool   `json:"partial"`
	MissingShards []int  `json:"missingShards,omitempty"`
	Seq           uint64 `json:"seq,omitempty"`
}

// BatchSearchRequest is the body of POST /v1/search:batch.
type BatchSearchRequest struct {
	Queries []SearchRequest `json:"queries"`
}

// BatchSearchResponse holds one result list per query, in the order of the queries.
type BatchSearchResponse struct {
	Results [][]Hit `json:"results"`
	Seq     uint64  `json:"seq,omitempty"`
}

// LoadReport is the answer of GET /v1/load, scraped by the operator's load collector and
// used by the router's adaptive policy.
type LoadReport struct {
	QPS1s                 float64        `json:"qps1s"`
	QPS10s                float64        `json:"qps10s"`
	InFlight              int            `json:"inFlight"`
	QueueDepth            int            `json:"queueDepth"`
	LatencyP50Ms          float64        `json:"latencyP50Ms"`
	LatencyP99Ms          float64        `json:"latencyP99Ms"`
	CPUSeconds            float64        `json:"cpuSeconds"`
	Vectors               int            `json:"vectors"`
	MemoryBytes           int64          `json:"memoryBytes"`
	WALSeq                uint64         `json:"walSeq"`
	ReplicationLagRecords uint64         `json:"replicationLagRecords"`
	Role                  string         `json:"role"`
	Ready                 bool           `json:"ready"`
	Epoch                 uint64         `json:"epoch"`
	SlotQueries           map[int]uint64 `json:"slotQueries,omitempty"`
	SlotWrites            map[int]uint64 `json:"slotWrites,omitempty"`
	// Schema is what the shard accepts (its index's shape and request limits): a router
	// checks requests against it before it sends any part of them to a shard.
	Schema *Schema `json:"schema,omitempty"`
	// Unindexed counts the vectors applied but not yet inserted into the graph (after a
	// restart, until the background insert is done); searches scan them exactly.
	Unindexed int64 `json:"unindexed"`
	// Recovery says how the shard started: what the snapshot and the WAL after it held.
	Recovery *RecoveryReport `json:"recovery,omitempty"`
	// LastSnapshot is the last snapshot this process wrote; absent before the first.
	LastSnapshot *SnapshotReport `json:"lastSnapshot,omitempty"`
}

// RecoveryReport describes a shard's start-up (or a replica's last bootstrap).
type RecoveryReport struct {
	SnapshotSeq         uint64  `json:"snapshotSeq"`
	SnapshotVectors     int     `json:"snapshotVectors"`
	SnapshotLoadSeconds float64 `json:"snapshotLoadSeconds"`
	ReplayedRecords     int64   `json:"replayedRecords"`
	ReplayedVectors     int64   `json:"replayedVectors"`
	ReplayedBytes       int64   `json:"replayedBytes"`
	ReplaySeconds       float64 `json:"replaySeconds"`
	// TailVectors were applied but not in the graph when the shard was ready: those of
	// the snapshot's tail and of the WAL replay. DrainSeconds is how long inserting them
	// took, 0 until it is done.
	TailVectors  int64   `json:"tailVectors"`
	DrainSeconds float64 `json:"drainSeconds"`
	// Seconds is the whole recovery, from opening the data directory to serving.
	Seconds float64 `json:"seconds"`
}

// SnapshotReport describes a snapshot a shard wrote.
type SnapshotReport struct {
	Seq         uint64    `json:"seq"`
	Bytes       int64     `json:"bytes"`
	Seconds     float64   `json:"seconds"`
	Vectors     int       `json:"vectors"`
	TailVectors int       `json:"tailVectors"`
	Time        time.Time `json:"time"`
}

// Roles reported in LoadReport.Role.
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
)

// RouterStatus is the answer of a router's GET /v1/internal/router (bearer token): the
// routing epoch it routes by now and, per shard, the replicas it knows. The operator asks
// every ready router to learn that all of them adopted an epoch, and that a draining pod
// gets no new requests and has none in flight before it removes the pod.
type RouterStatus struct {
	// Epoch is the epoch of the routing table the router uses now; 0 before it has one.
	Epoch  uint64        `json:"epoch"`
	Shards []RouterShard `json:"shards"`
}

// RouterShard is what a router knows of one shard's replicas.
type RouterShard struct {
	Shard     int              `json:"shard"`
	Endpoints []RouterEndpoint `json:"endpoints"`
}

// RouterEndpoint is one shard replica as a router sees it.
type RouterEndpoint struct {
	// Pod is the replica's pod name (its host:port for static endpoints).
	Pod     string `json:"pod"`
	Ordinal int    `json:"ordinal"`
	// Draining is true when the router no longer chooses the replica for new requests:
	// its pod carries DrainAnnotation, or the pod left the router's endpoints while
	// requests to it were still open. A draining replica that is a shard's only ready
	// one keeps being chosen, and is then not reported as Draining.
	Draining bool `json:"draining"`
	// InFlight is the number of requests the router has open to the replica plus the
	// reads that started on a routing view that still offered it: an upper bound, exact
	// at 0, which is what the operator waits for.
	InFlight int `json:"inFlight"`
}

// DrainAnnotation with the value "true" on a shard pod takes it out of routing: routers
// stop choosing it for new requests at once and let in-flight ones finish. The operator
// sets it before it removes the pod; the shard server itself keeps serving what reaches it.
const DrainAnnotation = "annshard.io/drain"

// SlotsRequest is the body of the internal slot endpoints: POST /v1/internal/slots sets the
// owned set (and, optionally, the frozen subset) at an epoch; freeze and drop take the set
// to act on. Slots use the slots.Set text form ("0-255,300").
type SlotsRequest struct {
	Slots  string `json:"slots"`
	Frozen string `json:"frozen,omitempty"`
	Epoch  uint64 `json:"epoch,omitempty"`
}

// SlotsState is the answer of the internal slot endpoints: what the shard owns now.
// Importing slots are being copied in by an import job: not owned, not visible, no
// client writes. Seq is the shard's applied sequence number; on the answer to a freeze,
// every write the frozen slots accepted is at or below it.
type SlotsState struct {
	Owned     string `json:"owned"`
	Frozen    string `json:"frozen"`
	Importing string `json:"importing,omitempty"`
	Epoch     uint64 `json:"epoch"`
	// Dropped is set by the drop endpoint: how many vectors were removed.
	Dropped int    `json:"dropped,omitempty"`
	Seq     uint64 `json:"seq,omitempty"`
}

// Error codes carried in APIError.Code.
const (
	CodeInvalidArgument = "invalid_argument"
	CodeNotFound        = "not_found"
	CodeUnauthorized    = "unauthorized"
	CodeMoved           = "moved"
	CodeNotPrimary      = "not_primary"
	CodePayloadTooLarge = "payload_too_large"
	CodeUnavailable     = "unavailable"
	CodeInternal        = "internal"
	CodeConflict        = "conflict"
	// CodeMethodNotAllowed: the path exists, but not for this method (HTTP 405).
	CodeMethodNotAllowed = "method_not_allowed"
)

// ErrorBody is the JSON of every error answer.
type ErrorBody struct {
	Error APIError `json:"error"`
}

// APIError is an error answer of the API. Epoch is set with CodeMoved (the routing epoch
// the shard knows); Primary with CodeNotPrimary (the base URL of the primary).
type APIError struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	Epoch      uint64 `json:"epoch,omitempty"`
	Primary    string `json:"primary,omitempty"`
	HTTPStatus int    `json:"-"`
}

func (e *APIError) Error() string {
	if e.HTTPStatus != 0 {
		return fmt.Sprintf("%s (HTTP %d): %s", e.Code, e.HTTPStatus, e.Message)
	}
	return e.Code + ": " + e.Message
}

// ErrBadB64 is returned by DecodeB64 for input that is not a whole vector of the dimension.
var ErrBadB64 = errors.New("bad vector_b64")

// EncodeB64 encodes vec as standard base64 of little-endian float32, the vector_b64 form.
func EncodeB64(vec []float32) string {
	buf := make([]byte, 4*len(vec))
	for i, f := range vec {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(buf)
}

// DecodeB64 decodes a vector_b64 string. dim > 0 demands exactly that many components;
// dim <= 0 accepts any whole number of float32s.
func DecodeB64(s string, dim int) ([]float32, error) {
	if dim > 0 && base64.StdEncoding.DecodedLen(len(s)) < 4*dim {
		return nil, fmt.Errorf("%w: %d base64 bytes cannot hold %d float32s", ErrBadB64, len(s), dim)
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadB64, err)
	}
	if len(raw)%4 != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a whole number of float32s", ErrBadB64, len(raw))
	}
	if dim > 0 && len(raw) != 4*dim {
		return nil, fmt.Errorf("%w: %d float32s, want %d", ErrBadB64, len(raw)/4, dim)
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out, nil
}

// SlotRecord is one line of the internal slot streams, which are newline-delimited JSON:
// GET /v1/internal/slots:export sends the stored vectors of a slot set (Seq is the
// shard's sequence number when the export started; replay the WAL stream after it), and
// GET /v1/internal/slots:wal sends the writes to a slot set after a sequence number. A
// line with neither upserts nor deletes is a heartbeat whose Seq is the shard's last.
//
// On the WAL stream a heartbeat's Seq is how far the stream has read the log: every write
// to the slots at or below it was sent before it. Last is the shard's last sequence
// number when the line was sent.
type SlotRecord struct {
	Seq             uint64   `json:"seq"`
	Last            uint64   `json:"last,omitempty"`
	Upserts         []Vector `json:"upserts,omitempty"`
	Deletes         []string `json:"deletes,omitempty"`
	DeletePartition string   `json:"deletePartition,omitempty"`
}
