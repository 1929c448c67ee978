##@ kubectl plugin

# `make build` builds the kubectl plugin into bin/kubectl-annshard; put bin/ on PATH and
# `kubectl annshard ...` finds it.
BUILD_CMDS += kubectl-annshard=./cmd/kubectl-annshard
# The importer's workers, checkpoint and progress share state: race-test it.
RACE_PKGS += ./cmd/kubectl-annshard/...

.PHONY: test-cli
test-cli: ## Tests of the kubectl plugin: file readers, importer (fake router), output tables.
	$(GO) test -count=1 ./cmd/kubectl-annshard/...
