##@ Run

.PHONY: run
run: build k8s-bins $(HELM) ## The embedded default: local cluster, operator via Helm, sample index, demo data and queries.
	K8S_BIN=$(K8S_BIN) HELM=$(HELM) $(ROOT)/hack/run.sh

##@ End to end

.PHONY: test-e2e
test-e2e: build k8s-bins $(HELM) ## Run the e2e suite on a local cluster of its own (started and stopped here). GINKGO_ARGS="--ginkgo.label-filter=smoke" narrows it.
	HELM=$(HELM) $(ROOT)/hack/e2e-local.sh

TEST_TARGETS_LAST += test-e2e
