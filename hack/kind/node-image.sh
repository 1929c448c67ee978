#!/usr/bin/env bash
# Builds the kind node image offline and loads it into Docker; prints its reference.
#
#   Debian rootfs (rootfs.sh: debootstrap, systemd, runc, CNI plugins)
#   + kind's base-image files from the kind module (entrypoint, systemd units, containerd config)
#   + kubelet, kubeadm, kubectl (hack/tools/k8s), containerd, ctr, crictl (their tools modules)
#   + this repository's node files (hack/kind/node: CNI config, default StorageClass manifest)
#   + the images a node runs, assembled from binaries built here (hack/ociimage) and imported
#     into the node's containerd ahead of time, so that nothing is ever pulled:
#     kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, etcd, pause,
#     CoreDNS, local-path-provisioner and its helper.
#
# The result is cached outside the clone as $ANNSHARD_CACHE/kind/node-<key>.tar, keyed by
# every input (the pinned versions, these scripts, the node files, the image tool's source),
# so a second run only `docker load`s it, and a run with the image already in Docker does
# nothing. Needs root (debootstrap, chroot, a private containerd for the preload).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
k8s_version=${K8S_VERSION:?K8S_VERSION is required}
etcd_version=${ETCD_VERSION:?ETCD_VERSION is required}
base=${ANNSHARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/annshard}
cache=$base/kind
mkdir -p "$cache"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

modver() { (cd "$root/hack/tools/$1" && go list -m -f '{{.Version}}' "$2"); }
moddir() { (cd "$root/hack/tools/$1" && go list -m -f '{{.Dir}}' "$2"); }

# The cache key: every file that decides what goes into the image, and the versions.
key=$({
	echo "$k8s_version $etcd_version"
	sha256sum hack/kind/node-image.sh hack/kind/rootfs.sh hack/kind/build-bins.sh hack/build-k8s.sh \
		hack/tools/*/go.mod $(ls hack/ociimage/*.go | grep -v _test.go) $(find hack/kind/node -type f | sort)
} | sha256sum | cut -c1-12)
ref=annshard/kind-node:$k8s_version-$key
node_tar=$cache/node-$key.tar

if docker image inspect "$ref" >/dev/null 2>&1; then
	echo "$ref"
	exit 0
fi
if [ -f "$node_tar" ]; then
	echo "loading the cached node image $node_tar" >&2
	docker load -q -i "$node_tar" >&2
	echo "$ref"
	exit 0
fi

t0=$(date +%s)
step() { echo "[node-image +$(( $(date +%s) - t0 ))s] $*" >&2; }
work=$(mktemp -d "$cache/.build.XXXXXX")
ctrd_pid=
cleanup() {
	if [ -n "$ctrd_pid" ]; then kill "$ctrd_pid" 2>/dev/null && wait "$ctrd_pid" 2>/dev/null || true; fi
	for m in $(awk -v d="$work" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do umount -l "$m" || true; done
	rm -rf "$work"
}
trap cleanup EXIT

# 1. The Debian root filesystem, cached on its own (it changes only with rootfs.sh).
rootfs_tar=$cache/rootfs-$(sha256sum hack/kind/rootfs.sh | cut -c1-12).tar
if [ ! -f "$rootfs_tar" ]; then
	step "debootstrap"
	hack/kind/rootfs.sh "$rootfs_tar"
fi

# 2. Binaries (each cached by version).
step "binaries"
hack/build-k8s.sh "$work/k8s" kubelet kubeadm kube-proxy >/dev/null
bins=$(hack/kind/build-bins.sh)
ctrd_v=$(modver containerd github.com/containerd/containerd/v2)
coredns_v=$(modver coredns github.com/coredns/coredns)
lpp_v=$(modver localpath github.com/rancher/local-path-provisioner)
crictl_v=$(modver critools sigs.k8s.io/cri-tools)
pause_v=$(sed -n 's/^TAG ?= *//p' "$(moddir k8s k8s.io/kubernetes)/build/pause/Makefile")
go build -o "$work/ociimage" ./hack/ociimage

# 3. The node's file system.
step "root filesystem"
R=$work/rootfs
mkdir -p "$R"
tar -C "$R" --numeric-owner --xattrs --xattrs-include='*' -xpf "$rootfs_tar"
# kind's base-image files, with the modes its Dockerfile gives them.
kind_files=$(moddir kind sigs.k8s.io/kind)/images/base/files
(cd "$kind_files" && find . -type f) | while read -r f; do
	mode=0644
	case $f in ./usr/local/bin/* | ./kind/bin/*) mode=0755 ;; esac
	install -D -m "$mode" "$kind_files/$f" "$R/$f"
done
chmod 0755 "$R/kind" "$R/kind/bin"
# This repository's node files: the CNI config and the default StorageClass manifest.
(cd hack/kind/node && find . -type f) | while read -r f; do install -D -m 0644 "hack/kind/node/$f" "$R/$f"; done
install -m 0755 "$work/k8s/kubelet" "$work/k8s/kubeadm" "$work/k8s/kubectl" "$R/usr/bin/"
install -m 0755 "$bins/containerd-$ctrd_v" "$R/usr/local/bin/containerd"
install -m 0755 "$bins/containerd-shim-runc-v2-$ctrd_v" "$R/usr/local/bin/containerd-shim-runc-v2"
install -m 0755 "$bins/ctr-$ctrd_v" "$R/usr/local/bin/ctr"
install -m 0755 "$bins/crictl-$crictl_v" "$R/usr/local/bin/crictl"
# Debian installs the CNI plugins in /usr/lib/cni; containerd looks in /opt/cni/bin.
mkdir -p "$R/opt/cni"
ln -sfn /usr/lib/cni "$R/opt/cni/bin"
# As kind's Dockerfile: the OCI base spec with kind's product_uuid hook and no rlimits.
"$bins/ctr-$ctrd_v" oci spec |
	chroot "$R" jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"} | del(.process.rlimits)' \
		>"$R/etc/containerd/cri-base.json"
# The sandbox image is the pause built below.
sed -i "s|sandbox_image = \"registry.k8s.io/pause:[^\"]*\"|sandbox_image = \"registry.k8s.io/pause:$pause_v\"|" "$R/etc/containerd/config.toml"
grep -q "pause:$pause_v" "$R/etc/containerd/config.toml"
chroot "$R" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
chroot "$R" systemctl mask systemd-binfmt.service >/dev/null 2>&1
mkdir -p "$R/etc/kubernetes/manifests"
echo "$k8s_version" >"$R/kind/version"
# Names resolve from /etc/hosts only: the node never asks the host's resolver (kind's
# entrypoint looks up host.docker.internal, which falls back to the default gateway).
sed -i 's/^hosts:.*/hosts:          files/' "$R/etc/nsswitch.conf"

# 4. The images the node runs, from the binaries above.
step "component images"
img=$work/images
mkdir -p "$img"
path_env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
oci() { "$work/ociimage" -gzip 1 -env "$path_env" "$@" >/dev/null; }
for c in kube-apiserver kube-controller-manager kube-scheduler; do
	oci -o "$img/$c.tar" -tag "registry.k8s.io/$c:$k8s_version" \
		-file "/usr/local/bin/$c=$work/k8s/$c" -entrypoint "[\"/usr/local/bin/$c\"]"
done
# kube-proxy runs in nftables mode (hack/kind/cluster.yaml): it needs nft and its libraries.
oci -o "$img/kube-proxy.tar" -tag "registry.k8s.io/kube-proxy:$k8s_version" \
	-file "/usr/local/bin/kube-proxy=$work/k8s/kube-proxy" -entrypoint '["/usr/local/bin/kube-proxy"]' \
	-rootfs "$R" -closure /usr/sbin/nft
oci -o "$img/etcd.tar" -tag "registry.k8s.io/etcd:${etcd_version#v}-0" \
	-file "/usr/local/bin/etcd=$base/k8s-$k8s_version-etcd-$etcd_version/etcd" -entrypoint '["/usr/local/bin/etcd"]'
oci -o "$img/pause.tar" -tag "registry.k8s.io/pause:$pause_v" -file "/pause=$bins/pause-$pause_v" \
	-entrypoint '["/pause"]' -user 65535:65535
oci -o "$img/coredns.tar" -tag "registry.k8s.io/coredns/coredns:$coredns_v" \
	-file "/coredns=$bins/coredns-$coredns_v" -entrypoint '["/coredns"]'
oci -o "$img/local-path-provisioner.tar" -tag "docker.io/annshard/local-path-provisioner:$lpp_v" \
	-file "/usr/local/bin/local-path-provisioner=$bins/local-path-provisioner-$lpp_v" \
	-entrypoint '["/usr/local/bin/local-path-provisioner"]'
# The helper pod runs the provisioner's setup and teardown scripts: sh, mkdir, rm.
oci -o "$img/local-path-helper.tar" -tag "docker.io/annshard/local-path-helper:bookworm" \
	-rootfs "$R" -closure /bin/sh -closure /bin/mkdir -closure /bin/rm -closure /bin/chmod -dir /tmp:1777

# 5. Import them into the node's containerd store: a private containerd on this host whose
# root is the node's /var/lib/containerd, unpacked later by the node's own containerd on first
# use (as kind's node-image builder does: --no-unpack, pinned against image GC).
step "preloading images"
st=$work/containerd-state
mkdir -p "$st"
cat >"$work/containerd.toml" <<TOML
version = 3
root = "$R/var/lib/containerd"
state = "$st/state"
# Only the image store: no CRI, no NRI socket, no /opt plugin directory on this host.
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
  "io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt", "io.containerd.podsandbox.controller.v1.podsandbox",
  "io.containerd.sandbox.controller.v1.shim", "io.containerd.grpc.v1.sandbox-controllers"]
[grpc]
  address = "$st/containerd.sock"
[ttrpc]
  address = "$st/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
TOML
"$bins/containerd-$ctrd_v" --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
ctrd_pid=$!
ctr=("$bins/ctr-$ctrd_v" --address "$st/containerd.sock" --namespace k8s.io)
for _ in $(seq 50); do "${ctr[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
"${ctr[@]}" version >/dev/null || { cat "$work/containerd.log" >&2; exit 1; }
for t in "$img"/*.tar; do
	"${ctr[@]}" images import --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests "$t" >/dev/null
done
"${ctr[@]}" images list -q | grep -v '@sha256:' | sort >"$R/kind/images.txt"
kill "$ctrd_pid"
wait "$ctrd_pid" || true
ctrd_pid=
rm -rf "$st"
cat "$R/kind/images.txt" >&2

# 6. The image itself: the whole file system as one layer, with the entrypoint, environment
# and stop signal of kind's base image (systemd exits on SIGRTMIN+3).
step "node image"
tar -C "$R" --numeric-owner --xattrs --xattrs-include='*' -cf "$work/node-rootfs.tar" .
"$work/ociimage" -o "$work/node.tar" -tag "$ref" -gzip 0 -layer-tar "$work/node-rootfs.tar" \
	-entrypoint '["/usr/local/bin/entrypoint","/sbin/init"]' -env container=docker -stop-signal SIGRTMIN+3 >/dev/null
rm -f "$cache"/node-*.tar
mv "$work/node.tar" "$node_tar"
for old in "$cache"/rootfs-*.tar; do [ "$old" = "$rootfs_tar" ] || rm -f "$old"; done
step "loading into docker"
docker load -q -i "$node_tar" >&2
step "done: $ref"
echo "$ref"
