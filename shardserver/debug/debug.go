// Package debug serves Go's profiling endpoints (net/http/pprof) for `shardserver serve`
// and `shardserver route` on an address of their own (--debug-listen), off by default:
// they are for an operator with a port-forward, never for the Service.
package debug

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// Serve listens on addr and serves /debug/pprof/ until ctx ends. It returns the address
// it listens on (addr may ask for port 0) once it does; errors of serving afterwards are
// logged.
func Serve(ctx context.Context, addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--debug-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("debug endpoints stopped", "err", err)
		}
	}()
	slog.Info("serving Go's profiling endpoints", "addr", ln.Addr().String(), "path", "/debug/pprof/")
	return ln.Addr(), nil
}
