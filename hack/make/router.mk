##@ Router

# The router's and the balancers' tests already run under the race detector through
# RACE_PKGS' ./shardserver/... (the real-process test skips itself there).

.PHONY: test-router
test-router: ## Tests of the router and the balancing policies (fake shards and real shardserver processes).
	$(GO) test -count=1 ./shardserver/router/... ./shardserver/balance/...

.PHONY: bench-balance
bench-balance: ## Balancing policies on 3x3 real shard processes with slow replicas, open loop (ARGS="-json -duration 6s").
	$(GO) run ./test/bench/balance $(ARGS)
