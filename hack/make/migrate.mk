##@ Migration

.PHONY: bench-migrate
bench-migrate: ## Move a slot set holding N vectors between two real shard processes under writes and searches: copy vectors/s and MB/s, longest write pause, ratio to the destination's bulk upsert rate (ARGS="-n 100000 -dim 128 -json").
	$(GO) run ./test/bench/migrate $(ARGS)
