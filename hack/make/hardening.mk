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

# Every fuzz target of the data plane, found by name, so a new one runs without an edit
# here. Their seed corpora (and the crashers kept in testdata/fuzz) run in make test, as
# plain go test runs them.
FUZZTIME ?= 30s
FUZZ_PKGS ?= ./shardserver/... ./cmd/...

.PHONY: fuzz
fuzz: ## Run every fuzz target under FUZZ_PKGS for FUZZTIME each (default 30s): request bodies, vector_b64, search answers, WAL records, segments and replication streams, snapshots, slot sets, routing tables, HNSW files, vector files.
	@set -e; for dir in $$($(GO) list -f '{{.Dir}}' $(FUZZ_PKGS)); do \
	  for target in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do \
	    echo "=== fuzz $${dir#$(ROOT)/} $$target for $(FUZZTIME)"; \
	    $(GO) test $$dir -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME); \
	  done; \
	done
