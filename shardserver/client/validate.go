package client

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Request validation, shared by the shard server and the router so that both refuse the
// same input with the same words. Every message starts with the field the user sent
// ("vectors[3].id", "queries[0].k", "k") and says what is wrong with its value. A vector
// is named "vector" whichever form it came in: a router re-encodes a query's vector as
// vector_b64 for the shards, and a message must not leak that. Only base64 decoding
// errors, which only a vector_b64 the user sent can have, name vector_b64.
//
// The rules, for every endpoint alike:
//   - The body is one JSON object (UTF-8, RFC 8259) decoded strictly: unknown fields,
//     duplicate keys, case-insensitive key matches, invalid UTF-8 or lone surrogates,
//     numbers beyond float32 (vector components) or int (k, ef), values of the wrong
//     JSON type and trailing data are errors, never ignored, clamped or replaced.
//   - An id is 1..MaxIDBytes bytes of UTF-8 without control characters, not only
//     whitespace. A partition follows the same rules, but may be empty (none).
//   - A vector has the index's dimension, finite components, a squared length of at
//     most MaxSquaredNorm (beyond it float32 distances overflow to +Inf), and under
//     Cosine a non-zero length. Exactly one of vector and vector_b64 is given.
//   - Batches hold 1..MaxBatch items, ids are unique within an upsert batch; k is in
//     1..MaxK, ef in 0..MaxEf (0: the server's default).
//   - A body over MaxBodyBytes is 413 payload_too_large; everything else above is 400
//     invalid_argument. Nothing of a refused request is applied.

// MaxIDBytes bounds ids and partitions: the WAL encodes their length in 16 bits, and
// nobody needs a longer key.
const MaxIDBytes = 256

// MaxSquaredNorm bounds the squared Euclidean length of a vector: an L2 distance is at
// most 2|a|²+2|b|² and an inner product at most |a||b|, so with both vectors under a
// quarter of the largest float32 every distance stays finite.
const MaxSquaredNorm = math.MaxFloat32 / 4

// Schema is what a shard accepts: the shape of its index and its request limits. Shards
// publish it in their load report, so a router can refuse a bad request before any part
// of it reaches a shard (a batch split over several shards would otherwise be stored in
// part). A zero field is unknown, and its check is skipped: a router that has not seen
// a load report yet checks the shape of a request only, and the shards do the rest.
type Schema struct {
	Dimension    int    `json:"dimension"`
	Metric       string `json:"metric"` // L2, InnerProduct or Cosine
	MaxBatch     int    `json:"maxBatch"`
	MaxK         int    `json:"maxK"`
	MaxEf        int    `json:"maxEf"`
	MaxBodyBytes int64  `json:"maxBodyBytes"`
}

func invalid(format string, args ...any) *APIError {
	return &APIError{Code: CodeInvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// at names a field inside parent: at("queries[1]", "k") is "queries[1].k", at("", "k") is "k".
func at(parent, field string) string {
	if parent == "" {
		return field
	}
	return parent + "." + field
}

// DecodeJSON decodes the one JSON value of body into v under the rules above. Its errors
// are *APIError: payload_too_large when body is an http.MaxBytesReader that hit its
// limit, else invalid_argument naming the field.
func DecodeJSON(body io.Reader, v any) error {
	if err := json.UnmarshalRead(body, v, strict); err != nil {
		return jsonError(err)
	}
	return nil
}

// errNullComponent: encoding/json (v1 and v2) reads null into a float32 as 0, which
// would store a vector the user did not send.
var errNullComponent = errors.New("null is not a number")

var strict = json.JoinOptions(
	json.RejectUnknownMembers(true),
	json.WithUnmarshalers(json.UnmarshalFromFunc(func(dec *jsontext.Decoder, _ *float32) error {
		if dec.PeekKind() == 'n' {
			return errNullComponent
		}
		return errors.ErrUnsupported
	})),
)

func jsonError(err error) *APIError {
	var tooBig *http.MaxBytesError
	var syn *jsontext.SyntacticError
	var sem *json.SemanticError
	switch {
	case errors.As(err, &tooBig):
		return &APIError{Code: CodePayloadTooLarge, Message: fmt.Sprintf("request body over %d bytes", tooBig.Limit)}
	case errors.As(err, &syn):
		p := syn.JSONPointer
		switch {
		case errors.Is(syn.Err, jsontext.ErrDuplicateName):
			return invalid("%s: duplicate field %s", fieldPath(p.Parent()), quote(p.LastToken()))
		case errors.Is(syn.Err, io.ErrUnexpectedEOF) && syn.ByteOffset == 0:
			return invalid("request body: empty, want a JSON object")
		}
		return invalid("%s: malformed JSON at byte %d: %v", fieldPath(p), syn.ByteOffset, syn.Err)
	case errors.As(err, &sem):
		p := sem.JSONPointer
		switch {
		case errors.Is(sem.Err, errNullComponent):
			return invalid("%s: want a number, got null", fieldPath(p))
		case errors.Is(sem.Err, json.ErrUnknownName):
			return invalid("%s: unknown field %s", fieldPath(p.Parent()), quote(p.LastToken()))
		case sem.JSONKind == '0' && sem.GoType != nil && sem.GoType.Kind() == reflect.Float32:
			return invalid("%s: %s is out of float32 range (±3.4028235e+38)", fieldPath(p), quote(string(sem.JSONValue)))
		case sem.JSONKind == '0' && sem.GoType != nil && sem.GoType.Kind() == reflect.Int:
			return invalid("%s: %s is not an integer in range", fieldPath(p), quote(string(sem.JSONValue)))
		}
		return invalid("%s: want %s, got %s", fieldPath(p), typeWords(sem.GoType), kindWords(sem.JSONKind))
	}
	return invalid("request body: malformed JSON: %v", err)
}

// fieldPath turns a JSON pointer into the field names of the messages:
// "/vectors/3/vector/1" is "vectors[3].vector[1]". Numeric tokens are array indexes:
// no field of the API is a number.
func fieldPath(p jsontext.Pointer) string {
	var b strings.Builder
	for tok := range p.Tokens() {
		if _, err := strconv.Atoi(tok); err == nil && b.Len() > 0 {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	if b.Len() == 0 {
		return "request body"
	}
	return b.String()
}

// quote quotes a user's string for a message, cut to 64 bytes: an error must not echo
// a megabyte of garbage back.
func quote(s string) string {
	const limit = 64
	if len(s) <= limit {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:limit]) + "..."
}

func kindWords(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	return "something else"
}

func typeWords(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice:
		switch t.Elem().Kind() {
		case reflect.Float32:
			return "an array of numbers"
		case reflect.String:
			return "an array of strings"
		case reflect.Struct:
			return "an array of objects"
		}
		return "an array"
	}
	return t.String()
}

// CheckQuery checks the query string of a public endpoint: parameters other than
// allowed, or given twice, are refused like unknown or duplicate JSON fields (a
// misspelt ?partiton= would otherwise be ignored, and a delete applied in every
// partition), and so is a query string that does not parse.
func CheckQuery(rawQuery string, allowed ...string) error {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return invalid("query string: %v", err)
	}
	names := slices.Sorted(maps.Keys(q))
	for _, name := range names {
		if !slices.Contains(allowed, name) {
			return invalid("query string: unknown parameter %s", quote(name))
		}
		if n := len(q[name]); n > 1 {
			return invalid("%s: given %d times in the query string", name, n)
		}
	}
	return nil
}

// MethodNotAllowed is the answer to a method that a path of the API does not serve.
func MethodNotAllowed(method, path string, allowed []string) *APIError {
	return &APIError{Code: CodeMethodNotAllowed, HTTPStatus: http.StatusMethodNotAllowed,
		Message: fmt.Sprintf("%s %s: not allowed, use %s", method, path, strings.Join(allowed, " or "))}
}

// CheckID checks an id (field names where it came from).
func CheckID(field, id string) error {
	if id == "" {
		return invalid("%s: empty", field)
	}
	return checkKey(field, id)
}

// CheckPartition checks a partition; empty is no partition.
func CheckPartition(field, p string) error {
	if p == "" {
		return nil
	}
	return checkKey(field, p)
}

func checkKey(field, s string) error {
	if len(s) > MaxIDBytes {
		return invalid("%s: %d bytes, the limit is %d", field, len(s), MaxIDBytes)
	}
	blank := true
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return invalid("%s: not valid UTF-8 at byte %d", field, i)
			}
		}
		if unicode.IsControl(r) {
			return invalid("%s: control character %U at byte %d", field, r, i)
		}
		blank = blank && unicode.IsSpace(r)
	}
	if blank {
		return invalid("%s: only whitespace", field)
	}
	return nil
}

// Vector returns the vector of an item (parent names it: "vectors[2]", "" for a lone
// query) given as vector or as vector_b64, checked under the rules above.
func (s Schema) Vector(parent string, vec []float32, b64 string) ([]float32, error) {
	field := at(parent, "vector")
	switch {
	case vec != nil && b64 != "":
		return nil, invalid("%s: give vector or vector_b64, not both", field)
	case b64 != "":
		v, err := DecodeB64(b64, 0)
		if err != nil {
			return nil, invalid("%s: %s", at(parent, "vector_b64"), strings.TrimPrefix(err.Error(), ErrBadB64.Error()+": "))
		}
		vec = v
	case vec == nil:
		return nil, invalid("%s: missing (give vector or vector_b64)", field)
	}
	if s.Dimension > 0 && len(vec) != s.Dimension {
		return nil, invalid("%s: the vector has dimension %d, the index has %d", field, len(vec), s.Dimension)
	}
	if len(vec) == 0 {
		return nil, invalid("%s: the vector is empty", field)
	}
	var norm float64
	for i, f := range vec {
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return nil, invalid("%s: component %d is %v", field, i, f)
		}
		norm += float64(f) * float64(f)
	}
	if norm > MaxSquaredNorm {
		return nil, invalid("%s: squared length %.3g, over %.3g: its distances would overflow float32", field, norm, float64(MaxSquaredNorm))
	}
	if norm == 0 && strings.EqualFold(s.Metric, "Cosine") {
		return nil, invalid("%s: a zero vector has no direction (metric Cosine)", field)
	}
	return vec, nil
}

func (s Schema) checkBatch(field string, n int) error {
	if n == 0 {
		return invalid("%s: empty batch", field)
	}
	if s.MaxBatch > 0 && n > s.MaxBatch {
		return invalid("%s: %d in one batch, the limit is %d", field, n, s.MaxBatch)
	}
	return nil
}

// CheckUpsert checks a whole upsert batch and returns its vectors, decoded. Without a
// known dimension, every vector must have the first one's.
func (s Schema) CheckUpsert(req *UpsertRequest) ([][]float32, error) {
	if err := s.checkBatch("vectors", len(req.Vectors)); err != nil {
		return nil, err
	}
	vecs := make([][]float32, len(req.Vectors))
	seen := make(map[string]int, len(req.Vectors))
	for i, v := range req.Vectors {
		item := "vectors[" + strconv.Itoa(i) + "]"
		if err := CheckID(item+".id", v.ID); err != nil {
			return nil, err
		}
		if j, dup := seen[v.ID]; dup {
			return nil, invalid("%s.id: %s repeats vectors[%d].id", item, quote(v.ID), j)
		}
		seen[v.ID] = i
		if err := CheckPartition(item+".partition", v.Partition); err != nil {
			return nil, err
		}
		vec, err := s.Vector(item, v.Vector, v.VectorB64)
		if err != nil {
			return nil, err
		}
		if i > 0 && len(vec) != len(vecs[0]) {
			return nil, invalid("%s.vector: the vector has dimension %d, vectors[0] has %d", item, len(vec), len(vecs[0]))
		}
		vecs[i] = vec
	}
	return vecs, nil
}

// CheckDelete checks a batch delete.
func (s Schema) CheckDelete(req *DeleteRequest) error {
	if err := s.checkBatch("ids", len(req.IDs)); err != nil {
		return err
	}
	for i, id := range req.IDs {
		if err := CheckID("ids["+strconv.Itoa(i)+"]", id); err != nil {
			return err
		}
	}
	return CheckPartition("partition", req.Partition)
}

// CheckSearch checks one query (parent names it: "queries[1]", "" for a lone one) and
// returns its vector, decoded.
func (s Schema) CheckSearch(parent string, req *SearchRequest) ([]float32, error) {
	if req.K < 1 || (s.MaxK > 0 && req.K > s.MaxK) {
		if s.MaxK > 0 {
			return nil, invalid("%s: %d, want 1..%d", at(parent, "k"), req.K, s.MaxK)
		}
		return nil, invalid("%s: %d, want 1 or more", at(parent, "k"), req.K)
	}
	if req.Ef < 0 || (s.MaxEf > 0 && req.Ef > s.MaxEf) {
		if s.MaxEf > 0 {
			return nil, invalid("%s: %d, want 0 (the default) up to %d", at(parent, "ef"), req.Ef, s.MaxEf)
		}
		return nil, invalid("%s: %d, want 0 (the default) or more", at(parent, "ef"), req.Ef)
	}
	if err := CheckPartition(at(parent, "partition"), req.Partition); err != nil {
		return nil, err
	}
	return s.Vector(parent, req.Vector, req.VectorB64)
}

// CheckBatchSearch checks every query of a batch and returns their vectors, decoded.
func (s Schema) CheckBatchSearch(req *BatchSearchRequest) ([][]float32, error) {
	if err := s.checkBatch("queries", len(req.Queries)); err != nil {
		return nil, err
	}
	vecs := make([][]float32, len(req.Queries))
	for i := range req.Queries {
		vec, err := s.CheckSearch("queries["+strconv.Itoa(i)+"]", &req.Queries[i])
		if err != nil {
			return nil, err
		}
		vecs[i] = vec
	}
	return vecs, nil
}
