package shard

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

func (s *Server) routes() {
	m := http.NewServeMux()
	methods := map[string][]string{} // path -> the methods it serves
	handle := func(pattern, route string, h http.HandlerFunc) {
		m.HandleFunc(pattern, s.instrument(route, h))
		method, path, _ := strings.Cut(pattern, " ")
		methods[path] = append(methods[path], method)
	}
	write := func(h http.HandlerFunc) http.HandlerFunc { return s.requireToken(s.primaryOnly(s.serving(h))) }
	read := s.serving
	// The public API refuses query parameters it does not take (client.CheckQuery).
	params := func(allowed ...string) func(http.HandlerFunc) http.HandlerFunc {
		return func(h http.HandlerFunc) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				if err := client.CheckQuery(r.URL.RawQuery, allowed...); err != nil {
					writeError(w, err)
					return
				}
				h(w, r)
			}
		}
	}
	none, partition := params(), params("partition")

	handle("POST /v1/vectors", "upsert", none(write(s.handleUpsert)))
	handle("GET /v1/vectors/{id}", "get", partition(read(s.handleGet)))
	handle("DELETE /v1/vectors/{id}", "delete", partition(write(s.handleDeleteOne)))
	handle("POST /v1/vectors:delete", "delete_batch", none(write(s.handleDeleteBatch)))
	handle("POST /v1/search", "search", none(read(s.handleSearch)))
	handle("POST /v1/search:batch", "search_batch", none(read(s.handleBatchSearch)))
	// ?slots=false leaves out the per-slot counters: the routers poll every replica each
	// second and use none of them (on a shard holding all 4096 slots they are most of a
	// ~60 KB report); the operator's collector asks for them.
	handle("GET /v1/load", "load", params("slots")(func(w http.ResponseWriter, r *http.Request) {
		withSlots := true
		if v := r.URL.Query().Get("slots"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				writeError(w, invalid("slots: %q is not true or false", v))
				return
			}
			withSlots = b
		}
		writeJSON(w, http.StatusOK, s.loadReport(time.Now(), withSlots))
	}))
	// Liveness fails too once the store is broken: a restart is what repairs it (the
	// state is rebuilt from the log), or, when the log itself holds a record the index
	// refuses, a crash loop whose log names the record, never a shard that serves a
	// state missing acknowledged writes.
	handle("GET /healthz", "healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.store.Broken(); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	handle("GET /readyz", "readyz", s.handleReady)
	m.Handle("GET /metrics", s.metrics.handler())
	methods["/metrics"] = []string{"GET"}

	handle("GET /v1/replication/snapshot", "replication_snapshot", s.requireToken(s.handleReplSnapshot))
	handle("GET /v1/replication/wal", "replication_wal", s.requireToken(s.handleReplWAL))
	handle("GET /v1/internal/slots", "slots_get", s.requireToken(s.handleSlotsGet))
	handle("POST /v1/internal/slots", "slots_set", s.requireToken(s.handleSlotsSet))
	handle("POST /v1/internal/slots:freeze", "slots_freeze", write(s.handleSlotsFreeze))
	handle("POST /v1/internal/slots:unfreeze", "slots_unfreeze", write(s.handleSlotsUnfreeze))
	handle("POST /v1/internal/slots:drop", "slots_drop", write(s.handleSlotsDrop))
	handle("POST /v1/internal/imports", "imports_start", write(s.handleImportStart))
	handle("GET /v1/internal/imports/{id}", "imports_get", s.requireToken(s.handleImportGet))
	handle("DELETE /v1/internal/imports/{id}", "imports_cancel", write(s.handleImportCancel))
	// POST /v1/internal/imports/{id}:finish (the mux takes no suffix after a wildcard).
	handle("POST /v1/internal/imports/{id}", "imports_finish", write(s.handleImportFinish))
	handle("GET /v1/internal/slots:export", "slots_export", s.requireToken(read(s.handleSlotsExport)))
	handle("GET /v1/internal/slots:wal", "slots_wal", s.requireToken(s.handleSlotsWAL))
	// Errors in the API's JSON form for a path it does not have or a method a path does
	// not serve (the mux's own answers are plain text).
	for path, allowed := range methods {
		m.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			writeError(w, client.MethodNotAllowed(r.Method, r.URL.Path, allowed))
		})
	}
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &client.APIError{Code: client.CodeNotFound, Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	s.mux = m
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		slog.Debug("Writing response failed", "err", err)
	}
}

// writeError sends err as {"error":{...}}: an *client.APIError as is, a broken store as
// unavailable, anything else as internal.
func writeError(w http.ResponseWriter, err error) {
	var ae *client.APIError
	if !errors.As(err, &ae) {
		code := client.CodeInternal
		if errors.Is(err, errBroken) {
			code = client.CodeUnavailable
		}
		ae = &client.APIError{Code: code, Message: err.Error()}
		slog.Error("Request failed", "err", err)
	}
	writeJSON(w, client.StatusFor(ae.Code), client.ErrorBody{Error: *ae})
}

// serving refuses requests that read or change the vectors once the store is broken
// (Store.Broken): unavailable, so a router asks another replica.
func (s *Server) serving(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.store.Broken(); err != nil {
			writeError(w, err)
			return
		}
		h(w, r)
	}
}

// primaryOnly refuses writes on a read replica, naming the primary so the router can
// resend.
func (s *Server) primaryOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.repl != nil {
			writeError(w, &client.APIError{Code: client.CodeNotPrimary, Primary: s.primaryURL(),
				Message: "this replica is read-only; write to the primary " + s.primaryURL()})
			return
		}
		h(w, r)
	}
}

func (s *Server) body(w http.ResponseWriter, r *http.Request) *http.Request {
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	return r
}

func (s *Server) handleUpsert(w http.ResponseWriter, r *http.Request) {
	items, err := s.schema.decodeUpsert(s.body(w, r).Body)
	if err != nil {
		writeError(w, err)
		return
	}
	s.slots.gate.RLock()
	defer s.slots.gate.RUnlock()
	// An upsert that moves an id to another partition also changes its old slot, so
	// that slot must be writable too.
	err = s.slots.check(func(yield func(int) bool) {
		for _, it := range items {
			if !yield(it.slot) {
				return
			}
		}
		s.store.storedSlots(items, yield)
	})
	if err != nil {
		writeError(w, err)
		return
	}
	seq, n, err := s.store.Write(r.Context(), record{op: opUpsert, upserts: items})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, client.UpsertResponse{Upserted: n, Seq: seq})
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	id, partition := r.PathValue("id"), r.URL.Query().Get("partition")
	if err := checkPathID(id, partition); err != nil {
		writeError(w, err)
		return
	}
	// The applied seq is read before the lookup, so the answer reflects at least it.
	w.Header().Set(client.SeqHeader, strconv.FormatUint(s.store.Applied(), 10))
	v, ok, err := s.store.GetHiding(id, partition, s.hiddenFor(r))
	if err != nil {
		writeError(w, err)
		return
	}
	if !ok {
		writeError(w, &client.APIError{Code: client.CodeNotFound, Message: "no vector with id " + id})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// checkPathID checks the id and ?partition= of GET and DELETE /v1/vectors/{id}.
func checkPathID(id, partition string) error {
	if err := client.CheckID("id", id); err != nil {
		return err
	}
	return client.CheckPartition("partition", partition)
}

// deleteIDs validates ownership of the ids' slots and deletes them as one record.
func (s *Server) deleteIDs(r *http.Request, ids []string, partition string) (uint64, int, error) {
	items := s.store.deleteItems(ids, partition)
	s.slots.gate.RLock()
	defer s.slots.gate.RUnlock()
	err := s.slots.check(func(yield func(int) bool) {
		for _, it := range items {
			if !yield(it.slot) {
				return
			}
		}
	})
	if err != nil {
		return 0, 0, err
	}
	return s.store.Write(r.Context(), record{op: opDelete, partition: partition, deletes: items})
}

func (s *Server) handleDeleteOne(w http.ResponseWriter, r *http.Request) {
	id, partition := r.PathValue("id"), r.URL.Query().Get("partition")
	if err := checkPathID(id, partition); err != nil {
		writeError(w, err)
		return
	}
	seq, n, err := s.deleteIDs(r, []string{id}, partition)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, client.DeleteOneResponse{Deleted: n == 1, Seq: seq})
}

func (s *Server) handleDeleteBatch(w http.ResponseWriter, r *http.Request) {
	req, err := s.schema.decodeDelete(s.body(w, r).Body)
	if err != nil {
		writeError(w, err)
		return
	}
	seq, n, err := s.deleteIDs(r, req.IDs, req.Partition)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, client.DeleteResponse{Deleted: n, Seq: seq})
}

// search runs one validated query through the concurrency limit and records its load.
func (s *Server) search(q query, hidden *slots.Set) ([]client.Hit, error) {
	start := time.Now()
	s.load.waiting.Add(1)
	s.searchSem <- struct{}{}
	s.load.waiting.Add(-1)
	ef := q.ef
	if ef == 0 {
		ef = s.cfg.EfSearch
	}
	hits, err := s.store.SearchHiding(q.vec, q.k, max(ef, q.k), q.partition, hidden)
	<-s.searchSem
	now := time.Now()
	s.load.observe(now, now.Sub(start))
	if q.partition != "" {
		s.load.slotQueries[slots.Of(q.partition)].Add(1)
	}
	return hits, err
}

func (s *Server) handleSearch(w http.ResponseWriter, r *http.Request) {
	q, err := s.schema.decodeSearch(s.body(w, r).Body)
	if err != nil {
		writeError(w, err)
		return
	}
	seq := s.store.Applied()
	hits, err := s.search(q, s.hiddenFor(r))
	if err != nil {
		writeError(w, err)
		return
	}
	writeRaw(w, func(b []byte) []byte {
		return client.AppendSearchResponse(b, &client.SearchResponse{Results: hits, Seq: seq})
	})
}

func (s *Server) handleBatchSearch(w http.ResponseWriter, r *http.Request) {
	qs, err := s.schema.decodeBatchSearch(s.body(w, r).Body)
	if err != nil {
		writeError(w, err)
		return
	}
	seq := s.store.Applied()
	results := make([][]client.Hit, len(qs))
	hidden := s.hiddenFor(r)
	// One worker per search slot: a batch uses the cores a lone search cannot.
	var next atomic.Int64
	errs := make([]error, len(qs))
	var wg sync.WaitGroup
	for range min(cap(s.searchSem), len(qs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(qs); i = int(next.Add(1)) - 1 {
				results[i], errs[i] = s.search(qs[i], hidden)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		writeError(w, err)
		return
	}
	writeRaw(w, func(b []byte) []byte {
		return client.AppendBatchSearchResponse(b, &client.BatchSearchResponse{Results: results, Seq: seq})
	})
}

// writeRaw sends the JSON document fill appends, from a pooled buffer, with a length.
func writeRaw(w http.ResponseWriter, fill func([]byte) []byte) {
	buf := getBody()
	buf.Write(fill(buf.AvailableBuffer()))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	_, _ = w.Write(buf.Bytes())
	putBody(buf)
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if !s.ready() {
		msg := "starting or shutting down"
		if err := s.store.Broken(); err != nil {
			msg = err.Error()
		} else if s.repl != nil {
			msg = s.repl.status()
		}
		writeError(w, &client.APIError{Code: client.CodeUnavailable, Message: msg})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
