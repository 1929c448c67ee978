#!/usr/bin/env bash
# Builds the Debian root filesystem of the kind node image with debootstrap and writes it as
# a tarball: rootfs.sh OUT.tar. The packages are those kind's own base image installs
# (kind's images/base/Dockerfile) that a single-node cluster uses, plus Debian's runc and CNI
# plugins; containerd, the Kubernetes binaries and kind's files are added later (node-image.sh).
# Debian has no snapshot pinning here: the versions installed are written to
# /kind/debian-packages.txt inside the tarball so a run can be compared with another.
# Needs root (debootstrap chroots); leaves no mount behind.
set -euo pipefail
out=${1:?usage: rootfs.sh OUT.tar}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=(
	systemd dbus
	conntrack iptables nftables iproute2 ethtool util-linux mount kmod
	libseccomp2 pigz fuse-overlayfs
	e2fsprogs
	bash ca-certificates curl jq procps
	runc containernetworking-plugins
)
command -v debootstrap >/dev/null || { echo "rootfs.sh needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/kind-rootfs.XXXXXX")
dir=$work/rootfs
cleanup() {
	# debootstrap mounts proc and sys inside the target while it configures packages.
	for m in $(awk -v d="$dir" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do umount -l "$m" || true; done
	rm -rf "$work"
}
trap cleanup EXIT

debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" "$suite" "$dir" "$mirror"

# As kind's base image: no services but the ones enabled below, no kernel log in journald,
# systemd as /sbin/init. Then drop apt's caches.
find "$dir/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
rm -f "$dir"/lib/systemd/system/multi-user.target.wants/* "$dir"/etc/systemd/system/*.wants/* \
	"$dir"/lib/systemd/system/local-fs.target.wants/* "$dir"/lib/systemd/system/sockets.target.wants/*udev* \
	"$dir"/lib/systemd/system/sockets.target.wants/*initctl* "$dir"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >>"$dir/etc/systemd/journald.conf"
ln -sf /usr/lib/systemd/systemd "$dir/sbin/init"
mkdir -p "$dir/kind"
chroot "$dir" dpkg-query -W -f '${Package} ${Version}\n' >"$dir/kind/debian-packages.txt"
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log "$dir/debootstrap"
rm -f "$dir/etc/machine-id" "$dir/var/lib/dbus/machine-id" "$dir/etc/resolv.conf" "$dir/etc/hostname"

tar -C "$dir" --numeric-owner --xattrs --xattrs-include='*' -cf "$out.tmp" .
mv "$out.tmp" "$out"
