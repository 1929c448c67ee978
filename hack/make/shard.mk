##@ Shard server

# `make build` builds the shardserver binary (serve and route roles).
BUILD_CMDS += shardserver=./shardserver

.PHONY: test-shard
test-shard: ## Tests of the shard server and the API client, crash and replication tests with real processes included.
	$(GO) test -count=1 ./shardserver/shard/... ./shardserver/client/...

.PHONY: bench-shard
bench-shard: ## Benchmark a real shard server over loopback: upserts (Always/Interval), search QPS c=1/16 vs in-process (ARGS="-n 50000 -json").
	$(GO) run ./test/bench/shardbench $(ARGS)
