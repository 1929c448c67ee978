package shard

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/annshard/annshard/shardserver/client"
)

// authorized reports whether r carries the configured bearer token. With no token
// configured every request passes. The comparison runs in constant time over fixed-size
// digests, so neither the token's content nor its length leaks through timing.
func authorized(token string, r *http.Request) bool {
	if token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// requireToken wraps h so a request without the token gets 401 before h runs, so it
// changes nothing.
func (s *Server) requireToken(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !authorized(s.cfg.Token, r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="annshard"`)
			writeError(w, &client.APIError{Code: client.CodeUnauthorized, Message: "missing or wrong bearer token"})
			return
		}
		h(w, r)
	}
}
