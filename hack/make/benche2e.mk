##@ Distributed path benchmark

# The benches' shared helpers run clients concurrently (benchkit.ClosedLoop): race-test them.
RACE_PKGS += ./test/bench/internal/...

.PHONY: bench-e2e
bench-e2e: ## A router over 2 shards x 2 replicas of real processes vs one shard and the in-process core: QPS, p50/p99, CPU per query at several concurrencies, bulk upsert rate (ARGS="-json -concurrency 1,4,16").
	$(GO) run ./test/bench/e2e $(ARGS)
