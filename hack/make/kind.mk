##@ Images and kind

# Everything here works without a registry: images are assembled from binaries built here
# (hack/ociimage), and the kind node image is built offline (hack/kind/node-image.sh).
IMAGE_TAG ?= dev
KIND_CLUSTER ?= annshard-e2e

.PHONY: images
images: ## Build the operator and shard server images as tarballs in bin/images/ (no Docker build, no pull); IMAGE_TAG=dev.
	$(ROOT)/hack/kind/project-images.sh $(BIN)/images $(IMAGE_TAG)
	@echo "load with: docker load -i bin/images/annshard-operator.tar; docker load -i bin/images/shardserver.tar"

.PHONY: kind-node-image
kind-node-image: ## Build the kind node image offline (Debian, containerd, kubelet, preloaded control-plane images) and load it into Docker.
	K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) $(ROOT)/hack/kind/node-image.sh

.PHONY: test-e2e-kind
test-e2e-kind: k8s-bins $(HELM) ## Run the e2e suite on a kind cluster built here (node image, images, cluster, suite; cluster removed after).
	HELM=$(HELM) KUBECTL=$(KUBECTL) K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) \
		KIND_CLUSTER=$(KIND_CLUSTER) $(ROOT)/hack/e2e-kind.sh

# The kind tier runs in `make test` only when asked (E2E_KIND=1 make test): on the project's
# machines kind cannot start a node (Docker refuses --privileged root containers there: the
# host's capability bounding set lacks CAP_SYS_RESOURCE; see README), and a cold node image
# build (debootstrap, then kubelet, kubeadm, kube-proxy, containerd and CoreDNS from source)
# would not fit CI's budget next to the other tiers. The local-cluster e2e tier runs the same
# suite every time.
ifeq ($(E2E_KIND),1)
TEST_TARGETS_LAST += test-e2e-kind
endif
