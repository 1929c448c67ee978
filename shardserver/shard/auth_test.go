package shard

import (
	"github.com/annshard/annshard/shardserver/apitest"
	"net/http"
	"testing"

	"github.com/annshard/annshard/shardserver/client"
)

func TestAuth(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Token = "s3cret"
	s, hs := newTestServer(t, cfg)
	good := apitest.Vector(testDim, 1)
	upsert := `{"vectors":[{"id":"a","vector":` + good + `}]}`
	tests := []struct {
		name, method, path, token, body string
		want                            int
	}{
		{"upsert no token", "POST", "/v1/vectors", "", upsert, 401},
		{"upsert wrong token", "POST", "/v1/vectors", "s3cre", upsert, 401},
		{"upsert longer token", "POST", "/v1/vectors", "s3cret2", upsert, 401},
		{"delete no token", "DELETE", "/v1/vectors/a", "", "", 401},
		{"delete batch no token", "POST", "/v1/vectors:delete", "", `{"ids":["a"]}`, 401},
		{"slots no token", "GET", "/v1/internal/slots", "", "", 401},
		{"set slots no token", "POST", "/v1/internal/slots", "", `{"slots":"0-10","epoch":9}`, 401},
		{"freeze no token", "POST", "/v1/internal/slots:freeze", "", `{"slots":"0-4095"}`, 401},
		{"drop no token", "POST", "/v1/internal/slots:drop", "", `{"slots":"0-4095"}`, 401},
		{"export no token", "GET", "/v1/internal/slots:export?slots=0-4095", "", "", 401},
		{"replication snapshot no token", "GET", "/v1/replication/snapshot", "", "", 401},
		{"replication wal wrong token", "GET", "/v1/replication/wal?from=1", "nope", "", 401},
		{"search needs none", "POST", "/v1/search", "", `{"vector":` + good + `,"k":1}`, 200},
		{"load needs none", "GET", "/v1/load", "", "", 200},
		{"upsert with token", "POST", "/v1/vectors", "s3cret", upsert, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq, slotState := s.store.Applied(), s.slots.snapshot()
			code, body := do(t, tt.method, hs.URL+tt.path, tt.token, tt.body)
			if code != tt.want {
				t.Fatalf("status %d, want %d: %s", code, tt.want, body)
			}
			if tt.want == http.StatusUnauthorized {
				if e := errCode(t, body); e.Code != client.CodeUnauthorized {
					t.Fatalf("code %s", e.Code)
				}
				if s.store.Applied() != seq || s.slots.snapshot() != slotState {
					t.Fatal("an unauthorized request changed the shard")
				}
			}
		})
	}
}

func TestAuthorizedHeaderForms(t *testing.T) {
	tests := []struct {
		name, token, header string
		want                bool
	}{
		{"no token configured", "", "", true},
		{"exact", "abc", "Bearer abc", true},
		{"missing", "abc", "", false},
		{"basic scheme", "abc", "Basic abc", false},
		{"lower-case scheme", "abc", "bearer abc", false},
		{"prefix", "abc", "Bearer ab", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, "/", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			if got := authorized(tt.token, r); got != tt.want {
				t.Fatalf("authorized = %v, want %v", got, tt.want)
			}
		})
	}
}
