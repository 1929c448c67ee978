##@ Hardening

# The crash soak is not part of `make test`: 100 SIGKILLs take minutes. SOAK_ARGS passes
# flags, e.g. SOAK_ARGS="-rounds 20 -json" (go run ./test/bench/soak -h lists them).
SOAK_ARGS ?= -rounds 100

.PHONY: soak
soak: ## Crash soak: SIGKILL a primary shard 100 times under writers and a replica, check no acknowledged write is lost (SOAK_ARGS=...).
	$(GO) run ./test/bench/soak $(SOAK_ARGS)

.PHONY: bench-search-lock
bench-search-lock: ## Search p50/p99 under concurrent writes, read lock held over the walk (before) vs not (after), in one run (knobs: SEARCHLOCK_* in shard/lock_bench_test.go).
	$(GO) test ./shardserver/shard/ -run '^$$' -bench SearchUnderWrites -benchtime 1x -v
