# Operator area: the AnnIndex API, its generated code and manifests, the reconciler's
# envtest tier, and install/deploy with the kubectl built into bin/k8s.

CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
KUBECTL := $(K8S_BIN)/kubectl
IMG ?= annshard/operator:v0.1.0

TEST_TARGETS += verify-generated test-envtest
RACE_PKGS += ./controllers/...
BUILD_CMDS += manager=.

##@ Operator

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the AnnIndex CRD and the operator's RBAC into config/.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths=./api/... paths=./controllers/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate the API's DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: verify-generated
verify-generated: manifests generate ## Fail if the checked-in generated code or manifests are stale.
	@git diff --exit-code -- api config || { echo "generated files are stale: run make manifests generate and commit"; exit 1; }
	@untracked=$$(git ls-files --others --exclude-standard -- api config); \
	if [ -n "$$untracked" ]; then echo "generated files not committed:"; echo "$$untracked"; exit 1; fi

.PHONY: test-envtest
test-envtest: k8s-bins ## Integration tests of controllers/ against a real kube-apiserver and etcd (envtest), under the race detector.
	KUBEBUILDER_ASSETS=$(K8S_BIN) KUBECTL=$(KUBECTL) $(GO) test -count=1 -race ./controllers/...

.PHONY: build-manager
build-manager: ## Build the operator manager into bin/manager.
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/manager .

.PHONY: run-manager
run-manager: manifests ## Run the operator against the current kubeconfig's cluster.
	$(GO) run . --leader-elect=false

.PHONY: install
install: manifests k8s-bins ## Install the CRD into the cluster of the current kubeconfig.
	$(KUBECTL) apply --server-side -f config/crd/bases

.PHONY: uninstall
uninstall: k8s-bins ## Remove the CRD (and with it every AnnIndex) from the cluster.
	$(KUBECTL) delete --ignore-not-found -f config/crd/bases

.PHONY: deploy
deploy: manifests k8s-bins ## Deploy the operator (config/default, image IMG) to the cluster of the current kubeconfig.
	$(KUBECTL) kustomize config/default | sed 's|image: annshard/operator:v0.1.0|image: $(IMG)|' | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: k8s-bins ## Remove the operator deployed by deploy.
	$(KUBECTL) kustomize config/default | $(KUBECTL) delete --ignore-not-found -f -

$(CONTROLLER_GEN):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(BIN)/controller-gen $@
