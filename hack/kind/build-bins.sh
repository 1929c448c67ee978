#!/usr/bin/env bash
# Builds the binaries of the kind node image that are not Kubernetes itself, each pinned by
# the go.mod of its tools module (hack/tools/<module>), into the cache outside the clone:
#   $ANNSHARD_CACHE/kind/bin/<name>-<version>
# containerd, containerd-shim-runc-v2, ctr, coredns, local-path-provisioner, pause (the
# Kubernetes pause.c compiled static), crictl and the kind CLI. A binary already in the cache is not
# rebuilt. Prints the cache directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${ANNSHARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/annshard}/kind/bin
mkdir -p "$cache"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

# version of a module as the tools module pins it
modver() { (cd "$root/hack/tools/$1" && go list -m -f '{{.Version}}' "$2"); }

build() { # name module-dir package version [ldflags] [tags]
	local name=$1 dir=$2 pkg=$3 ver=$4 flags=${5:-} tags=${6:-}
	local out=$cache/$name-$ver
	if [ ! -x "$out" ]; then
		echo "building $name $ver ($pkg)" >&2
		(cd "$root/hack/tools/$dir" && go build -trimpath -tags "$tags" -ldflags "-s -w $flags" -o "$out.tmp" "$pkg")
		mv "$out.tmp" "$out"
	fi
}

ctrd=$(modver containerd github.com/containerd/containerd/v2)
ctrd_flags="-X github.com/containerd/containerd/v2/version.Version=$ctrd -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
# The snapshotters kind never selects are left out, as kind's own base image does.
ctrd_tags="no_aufs no_zfs no_btrfs no_devmapper"
for cmd in containerd containerd-shim-runc-v2 ctr; do
	build "$cmd" containerd "github.com/containerd/containerd/v2/cmd/$cmd" "$ctrd" "$ctrd_flags" "$ctrd_tags"
done
build coredns coredns github.com/coredns/coredns "$(modver coredns github.com/coredns/coredns)"
build local-path-provisioner localpath github.com/rancher/local-path-provisioner \
	"$(modver localpath github.com/rancher/local-path-provisioner)"
build kind kind sigs.k8s.io/kind "$(modver kind sigs.k8s.io/kind)"
build crictl critools sigs.k8s.io/cri-tools/cmd/crictl "$(modver critools sigs.k8s.io/cri-tools)" \
	"-X sigs.k8s.io/cri-tools/pkg/version.Version=$(modver critools sigs.k8s.io/cri-tools)"

# pause: Kubernetes' own pause.c from the k8s.io/kubernetes module, linked static.
k8s_dir=$(cd "$root/hack/tools/k8s" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
pause_ver=$(sed -n 's/^TAG ?= *//p' "$k8s_dir/build/pause/Makefile")
if [ ! -x "$cache/pause-$pause_ver" ]; then
	echo "building pause $pause_ver (gcc -static)" >&2
	gcc -Os -Wall -Werror -static -DVERSION="v$pause_ver" -o "$cache/pause-$pause_ver.tmp" "$k8s_dir/build/pause/linux/pause.c"
	strip "$cache/pause-$pause_ver.tmp"
	mv "$cache/pause-$pause_ver.tmp" "$cache/pause-$pause_ver"
fi
echo "$cache"
