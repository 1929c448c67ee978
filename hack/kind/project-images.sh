#!/usr/bin/env bash
# Builds the project's two images without a registry, a Dockerfile or a Docker daemon:
# the same static binaries the Dockerfiles build (same flags), assembled by hack/ociimage
# into docker-save tarballs on an empty base, laid out as the distroless/static:nonroot
# images of the Dockerfiles (uid 65532, /etc/passwd, /tmp, the same paths and entrypoints).
#   project-images.sh OUTDIR TAG   ->  OUTDIR/annshard-operator.tar, OUTDIR/shardserver.tar
# `docker load -i` or `kind load image-archive` them.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: project-images.sh OUTDIR TAG}
tag=${2:?usage: project-images.sh OUTDIR TAG}
cd "$root"
mkdir -p "$out" "$root/bin/image"
export CGO_ENABLED=0 GOOS=linux
go build -o "$root/bin/ociimage" ./hack/ociimage
go build -trimpath -ldflags="-s -w" -o "$root/bin/image/manager" .
# As Dockerfile.shardserver: GOAMD64=v3 turns on the AVX2 distance kernels.
GOAMD64=${GOAMD64:-v3} go build -trimpath -ldflags="-s -w" -o "$root/bin/image/shardserver" ./shardserver

common=(-file /etc/passwd=hack/kind/images/passwd -file /etc/group=hack/kind/images/group -dir /tmp:1777
	-user 65532:65532 -env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
"$root/bin/ociimage" -o "$out/annshard-operator.tar" -tag "annshard/annshard-operator:$tag" "${common[@]}" \
	-file /manager="$root/bin/image/manager" -entrypoint '["/manager"]'
"$root/bin/ociimage" -o "$out/shardserver.tar" -tag "annshard/shardserver:$tag" "${common[@]}" \
	-file /usr/local/bin/shardserver="$root/bin/image/shardserver" -dir /data -entrypoint '["/usr/local/bin/shardserver"]'
