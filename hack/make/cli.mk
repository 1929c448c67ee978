##@ kubectl plugin

# `make build` builds the kubectl plugin into bin/kubectl-annshard; put bin/ on PATH and
# `kubectl annshard ...` finds it.
BUILD_CMDS += kubectl-annshard=./cmd/kubectl-annshard
# The importer's workers, checkpoint and progress share state: race-test it.
RACE_PKGS += ./cmd/kubectl-annshard/...

.PHONY: test-cli
test-cli: ## Tests of the kubectl plugin: file readers, importer (fake router), output tables.
	$(GO) test -count=1 ./cmd/kubectl-annshard/...

# The picture in the README: the default annbench dataset's recall-QPS curve.
ANNBENCH_PLOT := docs/annbench-recall-qps.png

.PHONY: plots
plots: ## Draw the README's benchmark picture (docs/annbench-recall-qps.png) with annbench -plot.
	@mkdir -p docs
	$(GO) run ./test/bench/annbench $(ANNBENCH_DEFAULT) -plot $(ANNBENCH_PLOT)
