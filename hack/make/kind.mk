##@ Images and kind

# Everything here works without a registry: images are assembled from binaries built here
# (hack/ociimage), and the kind node image is built offline (hack/kind/node-image.sh).
IMAGE_TAG ?= dev
KIND_CLUSTER ?= annshard-e2e

.PHONY: images
images: ## Build the operator and shard server images as tarballs in bin/images/ (no Docker build, no pull); IMAGE_TAG=dev.
	$(ROOT)/hack/kind/project-images.sh $(BIN)/images $(IMAGE_TAG)
	@echo "load with: docker load -i bin/images/annshard-operator.tar; docker load -i bin/images/shardserver.tar"
