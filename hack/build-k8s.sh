#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries and etcd from the Go module proxy into
# bin/k8s/<version>/, the directory envtest (KUBEBUILDER_ASSETS) and the local cluster use.
# Each binary is also kept in a cache outside the clone, keyed by version, so a fresh clone
# (CI) copies instead of rebuilding. Arguments after the output directory name more commands
# of k8s.io/kubernetes/cmd to build the same way (the kind node image adds kubelet, kubeadm
# and kube-proxy).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
k8s_version=${K8S_VERSION:?K8S_VERSION is required}
etcd_version=${ETCD_VERSION:?ETCD_VERSION is required}
out=${1:-$root/bin/k8s/$k8s_version}
cache=${ANNSHARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/annshard}/k8s-$k8s_version-etcd-$etcd_version
mkdir -p "$out" "$cache"

minor=${k8s_version#v1.}
minor=${minor%%.*}
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

build() { # name module-dir package
	local name=$1 dir=$2 pkg=$3 flags=${4:-}
	if [ ! -x "$cache/$name" ]; then
		echo "building $name ($pkg)" >&2
		(cd "$root/hack/tools/$dir" && go build -trimpath -ldflags "$flags" -o "$cache/$name.tmp" "$pkg")
		mv "$cache/$name.tmp" "$cache/$name"
	fi
	if ! cmp -s "$cache/$name" "$out/$name"; then
		cp "$cache/$name" "$out/$name.tmp" && mv "$out/$name.tmp" "$out/$name"
	fi
}

build etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
build kube-apiserver k8s k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
build kube-controller-manager k8s k8s.io/kubernetes/cmd/kube-controller-manager "$ldflags"
build kube-scheduler k8s k8s.io/kubernetes/cmd/kube-scheduler "$ldflags"
build kubectl k8s k8s.io/kubernetes/cmd/kubectl "$ldflags"
for cmd in "${@:2}"; do
	build "$cmd" k8s "k8s.io/kubernetes/cmd/$cmd" "$ldflags"
done
echo "$out"
