// Package proctest runs the shardserver binary as a child process, for the tests that
// exercise real processes (shardserver/shard, shardserver/router) and for the benchmark
// commands under test/bench. It is test support, not part of the server.
//
// It does the same few things everywhere: build the binary (Build), pick a free
// 127.0.0.1 port (FreeAddr), start `shardserver <role> --listen <addr> <args...>` with
// stdout and stderr appended to a log file and wait until GET /healthz answers, failing
// early with the log when the process exits during start-up (Start), then end it with
// SIGTERM and SIGKILL after a grace period (Process.Stop) or at once (Process.Kill).
// On Linux the child also gets SIGKILL when its parent dies (Pdeathsig), so a test
// binary that times out or panics leaves no server running.
//
// Nothing here calls t.Fatal: every failure is an error, because benchmark commands
// have no *testing.T. Tests wrap Start in a helper that fails the test.
//
// The package is not under shardserver/internal because Go's internal rule would keep
// test/bench/... (outside shardserver/) from importing it.
//
// Concurrency: Build, FreeAddr and Start may be called from any goroutine. All methods
// of a Process are safe for concurrent use. Stop and Kill wait for the process to exit,
// may be called any number of times, also after the process exited on its own, and
// then only report how it exited. A Process is one run: to restart a server on the same
// address and data directory, Start again with the same Spec; the log file is appended
// to, so it keeps every run. FreeAddr is racy by nature: the port is free when it
// returns, and another process may take it before the server binds it.
package proctest
