// Command ociimage assembles container images without a registry, a Dockerfile or a Docker
// daemon, and writes them as a `docker save` tarball that `docker load`, `kind load
// image-archive` and `ctr images import` all read.
//
// The project's own binaries are static Go, so an image is a few files on an empty base:
//
//	ociimage -o shardserver.tar -tag annshard/shardserver:e2e \
//	    -file /usr/local/bin/shardserver=bin/shardserver -user 65532:65532 \
//	    -entrypoint '["/usr/local/bin/shardserver"]'
//
// Dynamically linked programs are taken from a root filesystem together with everything the
// dynamic loader needs (-rootfs DIR -closure /usr/sbin/nft): the ELF interpreter and the
// DT_NEEDED libraries, transitively, and every symlink on the way (Debian's merged /usr makes
// /lib a link to usr/lib). A whole root filesystem tarball becomes a layer with -layer-tar.
//
// Output is reproducible: entries are sorted, owned by root unless the source says otherwise
// (layer tarballs keep theirs), and stamped with the Unix epoch, so the same inputs give the
// same image digest and a cache keyed by inputs stays valid.
//
// It is a build tool run by one process at a time; nothing in it is concurrent.
package main
