package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func TestB64RoundTrip(t *testing.T) {
	tests := []struct {
		name string
		vec  []float32
	}{
		{"empty", []float32{}},
		{"one", []float32{1.5}},
		{"mixed", []float32{0, -1, 3.25, math.MaxFloat32, math.SmallestNonzeroFloat32}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeB64(EncodeB64(tt.vec), len(tt.vec))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.vec) {
				t.Fatalf("round trip = %v, want %v", got, tt.vec)
			}
		})
	}
}

func TestDecodeB64Rejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
		dim  int
	}{
		{"not base64", "!!!!", 1},
		{"wrong dim", EncodeB64([]float32{1, 2}), 3},
		{"partial float", "AAAAAAA=", 0},
		{"too long for dim", EncodeB64([]float32{1, 2, 3}), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeB64(tt.in, tt.dim); !errors.Is(err, ErrBadB64) {
				t.Fatalf("DecodeB64(%q, %d) err = %v, want ErrBadB64", tt.in, tt.dim, err)
			}
		})
	}
}

func TestJSONNames(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"upsert", UpsertRequest{Vectors: []Vector{{ID: "a1", Vector: []float32{0.5}, Partition: "acme"}}},
			`{"vectors":[{"id":"a1","vector":[0.5],"partition":"acme"}]}`},
		{"upserted", UpsertResponse{Upserted: 1, Seq: 812}, `{"upserted":1,"seq":812}`},
		{"delete", DeleteRequest{IDs: []string{"a1"}}, `{"ids":["a1"]}`},
		{"search", SearchRequest{VectorB64: "AAAAAA==", K: 10, Ef: 64, AllowPartial: true},
			`{"vector_b64":"AAAAAA==","k":10,"ef":64,"allowPartial":true}`},
		{"results", SearchResponse{Results: []Hit{{ID: "a1", Distance: 0.5}}, MissingShards: []int{2}},
			`{"results":[{"id":"a1","distance":0.5}],"partial":false,"missingShards":[2]}`},
		{"error", ErrorBody{Error: APIError{Code: CodeMoved, Message: "m", Epoch: 3, HTTPStatus: 409}},
			`{"error":{"code":"moved","message":"m","epoch":3}}`},
		{"load", LoadReport{QPS1s: 1, InFlight: 2, WALSeq: 3, Role: RolePrimary, SlotQueries: map[int]uint64{7: 1}},
			`{"qps1s":1,"qps10s":0,"inFlight":2,"queueDepth":0,"latencyP50Ms":0,"latencyP99Ms":0,"cpuSeconds":0,"vectors":0,"memoryBytes":0,"walSeq":3,"replicationLagRecords":0,"role":"primary","ready":false,"epoch":0,"slotQueries":{"7":1},"unindexed":0}`},
		{"recovery", LoadReport{Recovery: &RecoveryReport{SnapshotSeq: 9, ReplayedVectors: 5, TailVectors: 5}, LastSnapshot: &SnapshotReport{Seq: 9, Bytes: 100, Seconds: 0.5}},
			`{"qps1s":0,"qps10s":0,"inFlight":0,"queueDepth":0,"latencyP50Ms":0,"latencyP99Ms":0,"cpuSeconds":0,"vectors":0,"memoryBytes":0,"walSeq":0,"replicationLagRecords":0,"role":"","ready":false,"epoch":0,"unindexed":0,` +
				`"recovery":{"snapshotSeq":9,"snapshotVectors":0,"snapshotLoadSeconds":0,"replayedRecords":0,"replayedVectors":5,"replayedBytes":0,"replaySeconds":0,"tailVectors":5,"drainSeconds":0,"seconds":0},` +
				`"lastSnapshot":{"seq":9,"bytes":100,"seconds":0.5,"vectors":0,"tailVectors":0,"time":"0001-01-01T00:00:00Z"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestClientRequestsAndErrors(t *testing.T) {
	var gotAuth, gotPath, gotQuery, gotMethod string
	var gotBody []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotPath, gotQuery, gotMethod = r.Header.Get("Authorization"), r.URL.EscapedPath(), r.URL.RawQuery, r.Method
		gotBody, _ = io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/v1/vectors":
			_, _ = io.WriteString(w, `{"upserted":2,"seq":9}`)
		case "/v1/vectors/a/b":
			_, _ = io.WriteString(w, `{"id":"a/b","vector":[1,2],"partition":"p"}`)
		case "/v1/search":
			w.WriteHeader(http.StatusConflict)
			_, _ = io.WriteString(w, `{"error":{"code":"moved","message":"slot 7 moved","epoch":4}}`)
		case "/v1/load":
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "upstream down")
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	c := New(srv.URL+"/", WithToken("s3cret"), WithHTTPClient(srv.Client()))
	ctx := context.Background()

	t.Run("upsert", func(t *testing.T) {
		up, err := c.Upsert(ctx, &UpsertRequest{Vectors: []Vector{{ID: "x", Vector: []float32{1}}}})
		if err != nil || up.Upserted != 2 || up.Seq != 9 {
			t.Fatalf("Upsert = %+v, %v", up, err)
		}
		if gotAuth != "Bearer s3cret" || gotMethod != http.MethodPost || string(gotBody) != `{"vectors":[{"id":"x","vector":[1]}]}` {
			t.Fatalf("request: auth %q method %s body %s", gotAuth, gotMethod, gotBody)
		}
	})
	t.Run("get escapes id", func(t *testing.T) {
		v, err := c.Get(ctx, "a/b", "p q")
		if err != nil || v.ID != "a/b" || v.Partition != "p" || len(v.Vector) != 2 {
			t.Fatalf("Get = %+v, %v", v, err)
		}
		if gotPath != "/v1/vectors/a%2Fb" || gotQuery != "partition=p+q" {
			t.Fatalf("path %q query %q", gotPath, gotQuery)
		}
	})
	t.Run("api error", func(t *testing.T) {
		_, err := c.Search(ctx, &SearchRequest{K: 1})
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != CodeMoved || ae.Epoch != 4 || ae.HTTPStatus != http.StatusConflict {
			t.Fatalf("Search err = %#v", err)
		}
		if !IsCode(err, CodeMoved) {
			t.Fatal("IsCode(moved) = false")
		}
	})
	t.Run("plain error body", func(t *testing.T) {
		_, err := c.Load(ctx)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != CodeUnavailable || ae.Message != "upstream down" {
			t.Fatalf("Load err = %#v", err)
		}
	})
	t.Run("not found", func(t *testing.T) {
		if err := c.Ready(ctx); !IsCode(err, CodeNotFound) {
			t.Fatalf("Ready err = %v", err)
		}
	})
}

func TestStatusForAndBack(t *testing.T) {
	for _, code := range []string{CodeInvalidArgument, CodeNotFound, CodeUnauthorized, CodeNotPrimary,
		CodePayloadTooLarge, CodeUnavailable, CodeInternal} {
		t.Run(code, func(t *testing.T) {
			if got := codeForStatus(StatusFor(code)); got != code {
				t.Fatalf("codeForStatus(StatusFor(%s)) = %s", code, got)
			}
		})
	}
}

func TestSlotStreams(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr bool
		wantN   int
	}{
		{"complete export", `{"seq":5,"upserts":[{"id":"a","vector_b64":"AACAPw=="}]}` + "\n" + `{"seq":5}` + "\n", false, 1},
		{"cut after data", `{"seq":5,"upserts":[{"id":"a","vector_b64":"AACAPw=="}]}` + "\n", true, 1},
		{"empty", ``, true, 0},
		{"garbage", `{"seq":`, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Query().Get("slots") != "0-9" {
					t.Errorf("slots = %q", r.URL.Query().Get("slots"))
				}
				_, _ = io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			n := 0
			seq, err := New(srv.URL).ExportSlots(context.Background(), "0-9", func(r SlotRecord) error { n += len(r.Upserts); return nil })
			if (err != nil) != tt.wantErr || n != tt.wantN {
				t.Fatalf("ExportSlots = seq %d, n %d, err %v", seq, n, err)
			}
			if !tt.wantErr && seq != 5 {
				t.Fatalf("seq %d", seq)
			}
		})
	}
}

// TestGetSeqHeader: the seq of a get is its header; a header that is not a sequence
// number is an error (it used to read as 0), a missing one reads as 0.
func TestGetSeqHeader(t *testing.T) {
	tests := []struct {
		header  string // "-" sends none
		found   bool
		wantSeq uint64
		wantErr bool
	}{
		{"42", true, 42, false},
		{"42", false, 42, false},
		{"-", true, 0, false},
		{"abc", true, 0, true},
		{"abc", false, 0, true},
		{"-1", true, 0, true},
		{"1.5", true, 0, true},
		{"18446744073709551616", true, 0, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q found=%v", tt.header, tt.found), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.header != "-" {
					w.Header().Set(SeqHeader, tt.header)
				}
				if !tt.found {
					w.WriteHeader(http.StatusNotFound)
					_ = json.NewEncoder(w).Encode(ErrorBody{Error: APIError{Code: CodeNotFound, Message: "no"}})
					return
				}
				_ = json.NewEncoder(w).Encode(Vector{ID: "a", Vector: []float32{1}})
			}))
			defer srv.Close()
			v, seq, err := New(srv.URL).GetSeq(context.Background(), "a", "")
			switch {
			case tt.wantErr:
				if err == nil || IsCode(err, CodeNotFound) || !strings.Contains(err.Error(), SeqHeader) {
					t.Fatalf("bad header: %v, %d, %v; want an error naming %s", v, seq, err, SeqHeader)
				}
			case tt.found:
				if err != nil || seq != tt.wantSeq || v.ID != "a" {
					t.Fatalf("got %v, %d, %v; want a at seq %d", v, seq, err, tt.wantSeq)
				}
			default:
				if !IsCode(err, CodeNotFound) || seq != tt.wantSeq {
					t.Fatalf("got %d, %v; want not_found at seq %d", seq, err, tt.wantSeq)
				}
			}
		})
	}
}
