package main

import (
	"errors"
	"fmt"
)

// Exit codes, documented in the README and in `kubectl annshard --help`; scripts rely on
// them, so they never change meaning.
const (
	exitOK          = 0 // done
	exitError       = 1 // anything else: the cluster or a server answered an error, a network failure
	exitUsage       = 2 // bad command line
	exitBadInput    = 3 // an input file or row was rejected before anything was written
	exitNotFound    = 4 // the index (or the id given to search --id) does not exist
	exitIncomplete  = 5 // an import stopped part way (interrupted, or a batch failed); --resume goes on
	exitUnreachable = 6 // neither the API server proxy nor the pod IPs reach the index's pods
)

// codedError carries the exit code an error ends the command with.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code: code, err: err}
}

func codef(code int, format string, args ...any) error {
	return &codedError{code: code, err: fmt.Errorf(format, args...)}
}

// exitCodeOf maps an error to the process exit code.
func exitCodeOf(err error) int {
	if err == nil {
		return exitOK
	}
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	return exitError
}

const exitCodesHelp = `Exit codes:
  0  success
  1  error: the cluster or a server answered an error, or the network failed
  2  bad command line
  3  an input file or row was rejected; import wrote nothing
  4  the index, or the id given to search --id, does not exist
  5  import stopped part way (interrupted or a batch failed): run it again with --resume
  6  the index's pods cannot be reached (neither through the API server nor directly)`
