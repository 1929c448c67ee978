package main

import (
	"os"
	"os/signal"
	"syscall"
)

// signalNotify delivers SIGINT and SIGTERM, so an interrupted run still stops its
// shard processes.
func signalNotify(ch chan<- os.Signal) { signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM) }
