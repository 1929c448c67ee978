##@ Recovery

.PHONY: bench-recovery
bench-recovery: ## Kill a real shard server (SIGKILL) at random moments of a steady ingest and restart it: time to ready p50/max, vectors replayed, snapshot time/size, ingest vs core build rate (ARGS="-n 1000000 -rounds 10 -json").
	$(GO) run ./test/bench/recovery $(ARGS)

.PHONY: bench-stall
bench-stall: ## Write latency p50/p99/max of a shard store while snapshots are written back to back and while the index vacuums, next to idle (ARGS=-benchtime=8000x).
	$(GO) test ./shardserver/shard -run '^$$' -bench WriteStall $(or $(ARGS),-benchtime=4000x)
