#!/usr/bin/env bash
# `make test-e2e-kind`: the same e2e suite against a kind cluster. Needs Docker and kind
# (not available on the project's build machines): builds both images, loads them into
# kind, and reaches pods by their IPs through a route to the kind node (pods bind their
# pod IP, so port-forwarding, which dials localhost inside the pod, cannot reach them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${HELM:?}"
cluster=${KIND_CLUSTER:-annshard-e2e}
tag=e2e
for tool in docker kind; do
	command -v "$tool" >/dev/null || { echo "test-e2e-kind needs $tool on PATH" >&2; exit 1; }
done
docker build -t annshard/annshard-operator:$tag -f Dockerfile .
docker build -t annshard/shardserver:$tag -f Dockerfile.shardserver .
kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster" --wait 2m
kind load docker-image --name "$cluster" annshard/annshard-operator:$tag annshard/shardserver:$tag
node_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$cluster-control-plane")
pod_cidr=$(kubectl --context "kind-$cluster" get node "$cluster-control-plane" -o jsonpath='{.spec.podCIDR}' 2>/dev/null || echo 10.244.0.0/24)
echo "routing $pod_cidr via the kind node $node_ip (needs root)"
ip route replace "$pod_cidr" via "$node_ip"
kubeconfig=$(mktemp)
trap 'rm -f "$kubeconfig"' EXIT
kind get kubeconfig --name "$cluster" > "$kubeconfig"
KUBECONFIG=$kubeconfig E2E_HELM=$HELM \
	E2E_OPERATOR_IMAGE=annshard/annshard-operator:$tag E2E_SHARD_IMAGE=annshard/shardserver:$tag \
	go test ./test/e2e/ -count=1 -timeout 30m -v -ginkgo.v ${GINKGO_ARGS:-}
