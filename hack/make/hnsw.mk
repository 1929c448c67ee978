##@ HNSW core

# shardserver/hnsw is race-tested through RACE_PKGS += ./shardserver/... in the Makefile.

HNSW_FUZZTIME ?= 60s

.PHONY: fuzz-hnsw
fuzz-hnsw: ## Fuzz the HNSW file decoder for HNSW_FUZZTIME (default 60s).
	$(GO) test ./shardserver/hnsw/ -run '^$$' -fuzz FuzzRead -fuzztime $(HNSW_FUZZTIME)

.PHONY: bench-hnsw
bench-hnsw: ## HNSW micro-benchmarks: kernels, search QPS/recall per ef, build (HNSW_BENCH_LARGE=1 adds 60000x784).
	$(GO) test ./shardserver/hnsw/ -run '^$$' -bench 'Kernel' -benchtime 200ms
	$(GO) test ./shardserver/hnsw/ -run '^$$' -bench 'Search|Build$$|Prefetch' -benchmem -benchtime 3000x
