package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// Client calls one annshard endpoint (a shard replica or a router) over HTTP.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends "Authorization: Bearer token" on every request; writes and internal
// endpoints need it when the server has a token configured.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient replaces http.DefaultClient, e.g. to set timeouts or a transport with a
// larger idle-connection pool for fan-out.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client of the server at baseURL ("http://10.0.0.5:8080").
func New(baseURL string, opts ...Option) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	return c
}

// BaseURL returns the server address the client talks to.
func (c *Client) BaseURL() string { return c.base }

// Upsert stores a batch of vectors; the answer comes once the batch is durable.
func (c *Client) Upsert(ctx context.Context, req *UpsertRequest) (*UpsertResponse, error) {
	var out UpsertResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/vectors", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Get fetches one vector by id; partition may be empty. A missing id is an *APIError
// with CodeNotFound.
func (c *Client) Get(ctx context.Context, id, partition string) (*Vector, error) {
	var out Vector
	if err := c.Do(ctx, http.MethodGet, vectorPath(id, partition), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetSeq is Get that also returns the shard's applied WAL sequence number when it looked
// the id up (SeqHeader; 0 when the server did not send one), also on a not_found answer:
// a router uses it to tell a lagging replica's answer from a current one. A header that
// is not a sequence number makes the answer an error: taking it for 0 would make a
// current answer look stale, and a bad one for a large number a stale answer current.
func (c *Client) GetSeq(ctx context.Context, id, partition string) (*Vector, uint64, error) {
	var out Vector
	path := vectorPath(id, partition)
	h, err := c.do(ctx, http.MethodGet, path, nil, &out)
	var seq uint64
	if v := h.Get(SeqHeader); v != "" {
		var perr error
		if seq, perr = strconv.ParseUint(v, 10, 64); perr != nil {
			return nil, 0, fmt.Errorf("GET %s: bad %s header %q: %w", path, SeqHeader, v, perr)
		}
	}
	if err != nil {
		return nil, seq, err
	}
	return &out, seq, nil
}

// Delete removes one vector by id; Deleted is false when it did not exist.
func (c *Client) Delete(ctx context.Context, id, partition string) (*DeleteOneResponse, error) {
	var out DeleteOneResponse
	if err := c.Do(ctx, http.MethodDelete, vectorPath(id, partition), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteBatch removes many vectors by id in one durable batch.
func (c *Client) DeleteBatch(ctx context.Context, req *DeleteRequest) (*DeleteResponse, error) {
	var out DeleteResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/vectors:delete", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Search runs one k-nearest-neighbour query.
func (c *Client) Search(ctx context.Context, req *SearchRequest) (*SearchResponse, error) {
	var out SearchResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/search", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// BatchSearch runs several queries in one round trip.
func (c *Client) BatchSearch(ctx context.Context, req *BatchSearchRequest) (*BatchSearchResponse, error) {
	var out BatchSearchResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/search:batch", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Load fetches the server's load report.
func (c *Client) Load(ctx context.Context) (*LoadReport, error) {
	return c.load(ctx, "/v1/load")
}

// LoadSummary fetches the load report without the per-slot counters (SlotQueries and
// SlotWrites stay nil): what a router polls. A server older than the slots parameter
// sends them anyway.
func (c *Client) LoadSummary(ctx context.Context) (*LoadReport, error) {
	return c.load(ctx, "/v1/load?slots=false")
}

func (c *Client) load(ctx context.Context, path string) (*LoadReport, error) {
	var out LoadReport
	if err := c.Do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RouterStatus returns a router's routing epoch and what it knows of every shard replica
// (internal endpoint of the router role).
func (c *Client) RouterStatus(ctx context.Context) (*RouterStatus, error) {
	var out RouterStatus
	if err := c.Do(ctx, http.MethodGet, "/v1/internal/router", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Health returns nil when /healthz answers 2xx (the process is alive).
func (c *Client) Health(ctx context.Context) error {
	return c.Do(ctx, http.MethodGet, "/healthz", nil, nil)
}

// Ready returns nil when /readyz answers 2xx (the server should get traffic).
func (c *Client) Ready(ctx context.Context) error {
	return c.Do(ctx, http.MethodGet, "/readyz", nil, nil)
}

// Slots returns the slot state of a shard (internal endpoint).
func (c *Client) Slots(ctx context.Context) (*SlotsState, error) {
	var out SlotsState
	if err := c.Do(ctx, http.MethodGet, "/v1/internal/slots", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetSlots sets the owned (and frozen) slots of a shard at an epoch (internal endpoint).
func (c *Client) SetSlots(ctx context.Context, req *SlotsRequest) (*SlotsState, error) {
	return c.slotsCall(ctx, "/v1/internal/slots", req)
}

// FreezeSlots refuses further writes to req.Slots with CodeMoved at req.Epoch.
func (c *Client) FreezeSlots(ctx context.Context, req *SlotsRequest) (*SlotsState, error) {
	return c.slotsCall(ctx, "/v1/internal/slots:freeze", req)
}

// DropSlots durably deletes every vector in req.Slots and gives up their ownership.
func (c *Client) DropSlots(ctx context.Context, req *SlotsRequest) (*SlotsState, error) {
	return c.slotsCall(ctx, "/v1/internal/slots:drop", req)
}

func (c *Client) slotsCall(ctx context.Context, path string, req *SlotsRequest) (*SlotsState, error) {
	var out SlotsState
	if err := c.Do(ctx, http.MethodPost, path, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func vectorPath(id, partition string) string {
	p := "/v1/vectors/" + url.PathEscape(id)
	if partition != "" {
		p += "?partition=" + url.QueryEscape(partition)
	}
	return p
}

// Do sends in (JSON, when not nil) to path and decodes a 2xx answer into out (when not
// nil). A non-2xx answer becomes an *APIError; an answer without an error body still
// gets one, with a code derived from the status.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	_, err := c.do(ctx, method, path, in, out)
	return err
}

// do is Do that also returns the answer's headers (nil when no answer came).
func (c *Client) do(ctx context.Context, method, path string, in, out any) (http.Header, error) {
	var body io.Reader
	if in != nil {
		buf, err := encodeBody(in)
		if err != nil {
			return nil, fmt.Errorf("encoding %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(buf)
	}
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return resp.Header, decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Header, nil
	}
	if err := decodeBody(resp.Body, out); err != nil {
		return resp.Header, fmt.Errorf("decoding answer of %s %s: %w", method, path, err)
	}
	return resp.Header, nil
}

// bodies recycles the buffers answers and search requests are read into.
var bodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// getBuffer returns an empty buffer from bodies.
func getBuffer() *bytes.Buffer {
	buf := bodies.Get().(*bytes.Buffer)
	buf.Reset()
	return buf
}

// putBuffer returns buf to bodies, unless it grew past 1 MiB: the pool would keep the
// memory of one outsized body alive.
func putBuffer(buf *bytes.Buffer) {
	if buf.Cap() <= 1<<20 {
		bodies.Put(buf)
	}
}

// decodeBody decodes a JSON answer into out: search answers through decodeFast,
// anything else (or a search answer of another shape) with encoding/json.
func decodeBody(r io.Reader, out any) error {
	switch out.(type) {
	case *SearchResponse, *BatchSearchResponse:
	default:
		return json.NewDecoder(r).Decode(out)
	}
	buf := getBuffer()
	defer putBuffer(buf)
	if _, err := buf.ReadFrom(r); err != nil {
		return err
	}
	if decodeFast(buf.Bytes(), out) {
		return nil
	}
	return json.NewDecoder(bytes.NewReader(buf.Bytes())).Decode(out)
}

// newRequest builds a request to path on the client's server, with its token.
func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("building %s %s: %w", method, path, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if e := EpochFrom(ctx); e != 0 {
		req.Header.Set(EpochHeader, strconv.FormatUint(e, 10))
	}
	return req, nil
}

func decodeError(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb ErrorBody
	if err := json.Unmarshal(raw, &eb); err != nil || eb.Error.Code == "" {
		eb.Error = APIError{Code: codeForStatus(resp.StatusCode), Message: strings.TrimSpace(string(raw))}
		if eb.Error.Message == "" {
			eb.Error.Message = resp.Status
		}
	}
	eb.Error.HTTPStatus = resp.StatusCode
	e := eb.Error
	return &e
}

// StatusFor returns the HTTP status the API uses for an error code.
func StatusFor(code string) int {
	switch code {
	case CodeInvalidArgument:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeMoved, CodeConflict:
		return http.StatusConflict
	case CodeNotPrimary:
		return http.StatusMisdirectedRequest
	case CodePayloadTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	default:
		return http.StatusInternalServerError
	}
}

func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return CodeInvalidArgument
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		return CodeUnauthorized
	case http.StatusConflict:
		return CodeConflict
	case http.StatusMisdirectedRequest:
		return CodeNotPrimary
	case http.StatusRequestEntityTooLarge:
		return CodePayloadTooLarge
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return CodeUnavailable
	case http.StatusMethodNotAllowed:
		return CodeMethodNotAllowed
	default:
		return CodeInternal
	}
}

// IsCode reports whether err is an *APIError with the given code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// EpochHeader carries the routing epoch a router routes a read by. A shard that gets it
// answers for the slots it holds for that epoch: the slots it imports once the epoch is
// past the import's, the slots it handed away while the epoch is before the handover,
// and everything it stores while it has not seen the epoch yet. The router keeps of each
// shard's hits only the slots its table gives that shard, so a move shows every slot
// once. Without it a shard answers for the slots it owns now.
const EpochHeader = "X-Annshard-Epoch"

type epochKey struct{}

// WithEpoch returns a context whose requests carry epoch in EpochHeader.
func WithEpoch(ctx context.Context, epoch uint64) context.Context {
	return context.WithValue(ctx, epochKey{}, epoch)
}

// EpochFrom returns the epoch WithEpoch put in ctx, 0 if none.
func EpochFrom(ctx context.Context) uint64 {
	e, _ := ctx.Value(epochKey{}).(uint64)
	return e
}
