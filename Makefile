# annshard: a Kubernetes operator for sharded, replicated HNSW vector indexes.
#
# Every tool a target needs is installed into bin/ by the target itself, pinned by
# version, from the Go module proxy; built binaries are also cached outside the clone
# (ANNSHARD_CACHE) so a fresh clone reuses them. Area-specific targets live in
# hack/make/*.mk and are included below; `make help` lists them all.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
BIN := $(ROOT)/bin
GO ?= go
export GOTOOLCHAIN ?= local
export ANNSHARD_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/annshard

K8S_VERSION ?= v1.36.3
ETCD_VERSION ?= v3.6.5
K8S_BIN := $(BIN)/k8s/$(K8S_VERSION)

# Packages whose tests also run under the race detector: everything where
# goroutines share state. Other areas append to it in their .mk file.
RACE_PKGS := ./shardserver/...
# Test tiers run by `make test`, in order; each area's .mk file appends its own.
TEST_TARGETS := fmt-check vet test-unit test-race

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9.-]+:.*?##/ { printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: fmt
fmt: ## Format the Go code (gofmt -s).
	gofmt -s -w $$(git ls-files '*.go' ':!:hack/tools/**')

.PHONY: fmt-check
fmt-check: ## Fail if any Go file is not gofmt-clean.
	@out=$$(gofmt -s -l $$(git ls-files --cached --others --exclude-standard '*.go' ':!:hack/tools/**')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

##@ Test

.PHONY: test
test: ## Run every test tier that can run here (installs what it needs).
	@for t in $(TEST_TARGETS); do echo "=== make $$t"; $(MAKE) --no-print-directory $$t || exit 1; done

.PHONY: test-unit
test-unit: ## Unit tests of every package (the e2e suite and the local cluster have their own tiers).
	$(GO) test -count=1 $(shell $(GO) list ./... | grep -v -e /test/e2e -e /hack/localcluster)

.PHONY: test-race
test-race: ## Tests under the race detector where concurrency lives.
	$(GO) test -count=1 -race $(RACE_PKGS)

##@ Build

.PHONY: build
build: ## Build the binaries into bin/.
	$(GO) build ./...
	@mkdir -p $(BIN)
	@for cmd in $(BUILD_CMDS); do set -- $${cmd//=/ }; echo "go build -o bin/$$1 $$2"; $(GO) build -o $(BIN)/$$1 $$2; done

##@ Benchmarks

.PHONY: bench
bench: ## Run the ANN benchmark on a generated set (ARGS=... to pass flags, e.g. ARGS="-base b.fvecs -query q.fvecs").
	$(GO) run ./test/bench/annbench $(or $(ARGS),-gen 20000,128,32,1 -k 10 -m 16 -efc 200 -ef 10,20,40,80,160)

##@ Tools

.PHONY: k8s-bins
k8s-bins: $(K8S_BIN)/kube-apiserver ## Build kube-apiserver, controller-manager, scheduler, kubectl and etcd into bin/k8s/.
$(K8S_BIN)/kube-apiserver:
	K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) $(ROOT)/hack/build-k8s.sh $(K8S_BIN)

# name=package pairs built by `make build`; areas append theirs.
BUILD_CMDS :=

-include $(sort $(wildcard hack/make/*.mk))

# Tiers that need everything else built and tested first (the e2e suite) go last.
TEST_TARGETS += $(TEST_TARGETS_LAST)
