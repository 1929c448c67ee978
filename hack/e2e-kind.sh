#!/usr/bin/env bash
# `make test-e2e-kind`: the same e2e suite on a kind cluster, built and run with no registry.
#
#   node image     hack/kind/node-image.sh (offline; cached by its inputs outside the clone)
#   project images hack/kind/project-images.sh (static binaries on an empty base, no Docker build)
#   cluster        kind create with hack/kind/cluster.yaml on a docker network of its own
#   load           kind load image-archive
#   suite          go test ./test/e2e, reaching pods by their IPs through a route to the node
#
# Whatever the outcome, the cluster, its docker network and the route are removed; on a
# failure the cluster's logs are exported to .local/kind/logs first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${HELM:?}" "${KUBECTL:?}" "${K8S_VERSION:?}" "${ETCD_VERSION:?}"
cluster=${KIND_CLUSTER:-annshard-e2e}
# A network of our own (kind's default is "kind"), so deleting it cannot touch anyone else's.
export KIND_EXPERIMENTAL_DOCKER_NETWORK=${KIND_NETWORK:-annshard-kind}
# The node's /var is a docker volume on the host's file system, where overlayfs works; kind's
# entrypoint would pick fuse-overlayfs because the image's own root is fuse-overlayfs here.
export KIND_EXPERIMENTAL_CONTAINERD_SNAPSHOTTER=${KIND_SNAPSHOTTER:-overlayfs}
tag=e2e
pod_cidr=10.244.0.0/16 # hack/kind/cluster.yaml's podSubnet
state=$root/.local/kind
mkdir -p "$state"
command -v docker >/dev/null || { echo "test-e2e-kind needs docker" >&2; exit 1; }

declare -a timings
t_start=$(date +%s)
timed() { # label command...
	local name=$1 t0 rc=0
	shift
	t0=$(date +%s)
	"$@" || rc=$?
	timings+=("$(printf '%-16s %4ds' "$name" $(( $(date +%s) - t0 )))")
	return $rc
}

kind_bin=$(hack/kind/build-bins.sh)/kind-$(cd hack/tools/kind && GOFLAGS=-mod=mod go list -m -f '{{.Version}}' sigs.k8s.io/kind)
install -m 0755 "$kind_bin" "$root/bin/kind"
kind=("$root/bin/kind")
kubectl=("$KUBECTL" --kubeconfig "$state/kubeconfig")

had_network=$(docker network inspect "$KIND_EXPERIMENTAL_DOCKER_NETWORK" >/dev/null 2>&1 && echo yes || echo no)
# kind mounts the host's /lib/modules into the node; docker creates it when it is missing.
had_modules=$([ -e /lib/modules ] && echo yes || echo no)
route_added=
cleanup() {
	local rc=$?
	set +e
	if [ $rc -ne 0 ] && "${kind[@]}" get clusters 2>/dev/null | grep -qx "$cluster"; then
		echo "=== the run failed: cluster state and logs (also in $state/logs)" >&2
		"${kubectl[@]}" get nodes,pods -A -o wide >&2
		"${kubectl[@]}" get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -40 >&2
		rm -rf "$state/logs"
		"${kind[@]}" export logs --name "$cluster" "$state/logs" >/dev/null 2>&1
	fi
	[ -n "$route_added" ] && ip route del "$pod_cidr" via "$route_added"
	"${kind[@]}" delete cluster --name "$cluster" --kubeconfig "$state/kubeconfig" >/dev/null 2>&1
	[ "$had_network" = no ] && docker network rm "$KIND_EXPERIMENTAL_DOCKER_NETWORK" >/dev/null 2>&1
	[ "$had_modules" = no ] && rmdir /lib/modules 2>/dev/null
	echo "=== kind e2e timings (total $(( $(date +%s) - t_start ))s, exit $rc)"
	printf '  %s\n' "${timings[@]}"
	exit $rc
}
trap cleanup EXIT
# A stopped run (Ctrl-C, kill) still cleans up: exiting runs the EXIT trap.
trap "exit 143" TERM INT

node_image_out=$state/node-image
timed "node image" bash -c "hack/kind/node-image.sh >'$node_image_out'"
node_image=$(tail -1 "$node_image_out")
timed "project images" hack/kind/project-images.sh "$state/images" "$tag"

"${kind[@]}" delete cluster --name "$cluster" --kubeconfig "$state/kubeconfig" >/dev/null 2>&1 || true
sed "s/ETCD_TAG/${ETCD_VERSION#v}-0/" hack/kind/cluster.yaml >"$state/cluster.yaml"
timed "cluster create" "${kind[@]}" create cluster --name "$cluster" --image "$node_image" \
	--config "$state/cluster.yaml" --kubeconfig "$state/kubeconfig" --wait 3m
# CoreDNS answers cluster names only: no query leaves for the host's resolver.
"${kubectl[@]}" -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}' |
	awk '/^ *forward /{skip=1} skip&&/}/{skip=0; next} !skip' >"$state/Corefile"
"${kubectl[@]}" -n kube-system create configmap coredns --from-file=Corefile="$state/Corefile" \
	--dry-run=client -o yaml | "${kubectl[@]}" apply -f - >/dev/null
grep -q forward "$state/Corefile" && { echo "Corefile still forwards" >&2; exit 1; }
timed "load images" "${kind[@]}" load image-archive --name "$cluster" \
	"$state/images/annshard-operator.tar" "$state/images/shardserver.tar"

node_ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$KIND_EXPERIMENTAL_DOCKER_NETWORK\").IPAddress}}" "$cluster-control-plane")
echo "routing $pod_cidr via the kind node $node_ip"
ip route replace "$pod_cidr" via "$node_ip"
route_added=$node_ip

timed "suite" env KUBECONFIG="$state/kubeconfig" E2E_HELM="$HELM" \
	E2E_OPERATOR_IMAGE=annshard/annshard-operator:$tag E2E_SHARD_IMAGE=annshard/shardserver:$tag \
	go test ./test/e2e/ -count=1 -timeout 30m -v -ginkgo.v ${GINKGO_ARGS:-}
