##@ Local cluster

# Extra flags for `localcluster up`, e.g. CLUSTER_ARGS="--image myrepo=bin/mybinary".
CLUSTER_ARGS ?=

.PHONY: cluster-up
cluster-up: k8s-bins ## Start the local Kubernetes (no Docker); KUBECONFIG=.local/kubeconfig.
	$(GO) run ./hack/localcluster up --k8s-bin-dir $(K8S_BIN) $(CLUSTER_ARGS)

.PHONY: cluster-down
cluster-down: ## Stop every process of the local cluster (state stays in .local/).
	$(GO) run ./hack/localcluster down

.PHONY: cluster-status
cluster-status: ## Show the local cluster's processes and pods.
	$(GO) run ./hack/localcluster status

.PHONY: test-localcluster
test-localcluster: k8s-bins ## Throwaway local cluster: real pods, then down; agent built with -race.
	$(GO) test -count=1 -race -timeout 6m ./hack/localcluster/...

TEST_TARGETS += test-localcluster
