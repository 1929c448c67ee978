##@ ANN benchmark

# The harness shares counters and the first error between the goroutines of its parallel
# build, ground truth and all-core search: race-test it too (its tests take seconds).
RACE_PKGS += ./test/bench/annbench/...

ANNBENCH_DEFAULT := -gen 20000,128,32,1 -k 10 -m 16 -efc 200 -ef 10,20,40,80,160

.PHONY: bench-json
bench-json: ## Run the ANN benchmark printing only JSON lines, for tools that compare runs (ARGS=... as for bench).
	$(GO) run ./test/bench/annbench $(or $(ARGS),$(ANNBENCH_DEFAULT)) -json
