package router

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/annshard/annshard/shardserver/client"
)

// MaxBodyBytes bounds a request body at the router until it knows the shards' limit.
const MaxBodyBytes = 64 << 20

// Handler returns the router's HTTP API: the public API of DESIGN.md section 4 plus
// /metrics, /healthz, /readyz and the internal status the operator polls
// (GET /v1/internal/router, see Status).
func (r *Router) Handler() http.Handler {
	mux := http.NewServeMux()
	methods := map[string][]string{} // path -> the methods it serves
	handle := func(pattern string, h http.Handler) {
		mux.Handle(pattern, h)
		method, path, _ := strings.Cut(pattern, " ")
		methods[path] = append(methods[path], method)
	}
	// The public API refuses query parameters it does not take (client.CheckQuery).
	params := func(op string, h http.HandlerFunc, allowed ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			if err := client.CheckQuery(req.URL.RawQuery, allowed...); err != nil {
				r.answer(w, op, time.Now(), nil, err)
				return
			}
			h(w, req)
		}
	}
	handle("POST /v1/search", params("search", r.serveSearch))
	handle("POST /v1/search:batch", params("search_batch", r.serveBatchSearch))
	handle("POST /v1/vectors", params("upsert", r.serveUpsert))
	handle("POST /v1/vectors:delete", params("delete", r.serveDeleteBatch))
	handle("GET /v1/vectors/{id}", params("get", r.serveGet, "partition"))
	handle("DELETE /v1/vectors/{id}", params("delete", r.serveDelete, "partition"))
	handle("GET /v1/internal/router", http.HandlerFunc(r.serveStatus))
	handle("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") }))
	handle("GET /readyz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if err := r.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	}))
	handle("GET /metrics", promhttp.HandlerFor(r.m.reg, promhttp.HandlerOpts{}))
	// Errors in the API's JSON form for a path the router does not have or a method a
	// path does not serve (the mux's own answers are plain text).
	for path, allowed := range methods {
		mux.HandleFunc(path, func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			r.answer(w, "other", time.Now(), nil, client.MethodNotAllowed(req.Method, req.URL.Path, allowed))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		r.answer(w, "other", time.Now(), nil, apiErr(client.CodeNotFound, "no such endpoint: %s %s", req.Method, req.URL.Path))
	})
	return mux
}

func (r *Router) serveSearch(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	var in client.SearchRequest
	if err := client.ReadSearch(r.limitBody(w, req), &in); err != nil {
		r.answer(w, "search", time.Now(), nil, err)
		return
	}
	out, err := r.Search(req.Context(), &in)
	r.answer(w, "search", start, out, err)
}

func (r *Router) serveBatchSearch(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	var in client.BatchSearchRequest
	if err := client.ReadBatchSearch(r.limitBody(w, req), &in); err != nil {
		r.answer(w, "search_batch", time.Now(), nil, err)
		return
	}
	out, err := r.BatchSearch(req.Context(), &in)
	r.answer(w, "search_batch", start, out, err)
}

func (r *Router) serveUpsert(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	if !r.authorized(w, req, "upsert", start) {
		return
	}
	var in client.UpsertRequest
	if !r.decode(w, req, "upsert", &in) {
		return
	}
	out, err := r.Upsert(req.Context(), &in)
	r.answer(w, "upsert", start, out, err)
}

func (r *Router) serveDeleteBatch(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	if !r.authorized(w, req, "delete", start) {
		return
	}
	var in client.DeleteRequest
	if !r.decode(w, req, "delete", &in) {
		return
	}
	out, err := r.DeleteBatch(req.Context(), &in)
	r.answer(w, "delete", start, out, err)
}

func (r *Router) serveGet(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	out, err := r.Get(req.Context(), req.PathValue("id"), req.URL.Query().Get("partition"))
	r.answer(w, "get", start, out, err)
}

func (r *Router) serveDelete(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	if !r.authorized(w, req, "delete", start) {
		return
	}
	out, err := r.Delete(req.Context(), req.PathValue("id"), req.URL.Query().Get("partition"))
	r.answer(w, "delete", start, out, err)
}

// authorized checks the bearer token of a write when the router has one: the router
// holds the shards' token, so an open router would be an open door to them. The token may
// also come in client.TokenHeader, for requests that reach the router through the
// Kubernetes API server's service proxy: the API server authenticates the caller with the
// Authorization header and removes it before proxying.
func (r *Router) authorized(w http.ResponseWriter, req *http.Request, op string, start time.Time) bool {
	if r.cfg.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok {
		got = req.Header.Get(client.TokenHeader)
		ok = got != ""
	}
	if ok && subtle.ConstantTimeCompare([]byte(got), []byte(r.cfg.Token)) == 1 {
		return true
	}
	r.answer(w, op, start, nil, apiErr(client.CodeUnauthorized, "missing or wrong bearer token"))
	return false
}

// decode reads a JSON body under the shards' rules (client.DecodeJSON: strict, so a typo
// is not silently ignored) and answers the error itself when it fails. Searches are
// read with client.ReadSearch instead: the same rules and errors, a hand-written parser.
func (r *Router) decode(w http.ResponseWriter, req *http.Request, op string, into any) bool {
	err := client.DecodeJSON(r.limitBody(w, req), into)
	if err == nil {
		return true
	}
	r.answer(w, op, time.Now(), nil, err)
	return false
}

// limitBody is the request's body, limited to the shards' MaxBodyBytes.
func (r *Router) limitBody(w http.ResponseWriter, req *http.Request) io.Reader {
	return http.MaxBytesReader(w, req.Body, r.requestSchema(req.Context()).MaxBodyBytes)
}

// answer writes out as JSON, or err as the API's error body, and counts the request.
func (r *Router) answer(w http.ResponseWriter, op string, start time.Time, out any, err error) {
	code := "ok"
	status := http.StatusOK
	var body any = out
	if err != nil {
		var ae *client.APIError
		if !errors.As(err, &ae) {
			ae = apiErr(client.CodeInternal, "%v", err)
		}
		e := *ae
		// Keep the context the router added ("shard 2: ...") in front of the message.
		if prefix := strings.TrimSuffix(err.Error(), ae.Error()); prefix != err.Error() {
			e.Message = prefix + e.Message
		}
		status = e.HTTPStatus
		if status == 0 {
			status = client.StatusFor(e.Code)
		}
		code = e.Code
		body = client.ErrorBody{Error: e}
	}
	r.m.observe(op, code, time.Since(start).Seconds())
	w.Header().Set("Content-Type", "application/json")
	if !writeSearchAnswer(w, status, body) {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
}

// writeSearchAnswer writes body if it is a search answer, the bulk of a router's
// traffic, by hand (the document encoding/json writes, see client.AppendSearchResponse),
// and reports whether it did.
func writeSearchAnswer(w http.ResponseWriter, status int, body any) bool {
	var fill func([]byte) []byte
	switch out := body.(type) {
	case *client.SearchResponse:
		if out != nil {
			fill = func(b []byte) []byte { return client.AppendSearchResponse(b, out) }
		}
	case *client.BatchSearchResponse:
		if out != nil {
			fill = func(b []byte) []byte { return client.AppendBatchSearchResponse(b, out) }
		}
	}
	if fill == nil {
		return false
	}
	buf := answers.Get().(*[]byte)
	*buf = fill((*buf)[:0])
	w.WriteHeader(status)
	_, _ = w.Write(*buf)
	if cap(*buf) <= 1<<20 {
		answers.Put(buf)
	}
	return true
}

// answers recycles the buffers search answers are written into.
var answers = sync.Pool{New: func() any { return new([]byte) }}
