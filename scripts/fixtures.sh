#!/usr/bin/env bash
# Builds the real data the tests, the demo and the benchmarks use, once, into
# a cache that survives between runs ($CLIP_FIXTURES, default
# /var/cache/clip-native):
#   debian-bookworm-rootfs/   a minbase Debian rootfs made by debootstrap
#   demo-oci/                 an OCI image layout, tag "bookworm": two gzip
#                             layers made by umoci (the Debian rootfs, then a
#                             layer that adds, changes and deletes files)
#   debian-layer.tar.gz       the first layer's blob (a real Debian layer)
# Prints nothing but progress on stderr; safe to run again (it reuses what exists).
set -euo pipefail
FIX=${CLIP_FIXTURES:-/var/cache/clip-native}
SUITE=${CLIP_DEBIAN_SUITE:-bookworm}
MIRROR=${CLIP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$FIX"

rootfs="$FIX/debian-$SUITE-rootfs"
if [ ! -d "$rootfs" ]; then
  echo "fixtures: debootstrap --variant=minbase $SUITE (a few minutes, once)" >&2
  rm -rf "$rootfs.tmp"
  debootstrap --variant=minbase "$SUITE" "$rootfs.tmp" "$MIRROR" >"$FIX/debootstrap.log" 2>&1 ||
    { tail -20 "$FIX/debootstrap.log" >&2; exit 1; }
  mv "$rootfs.tmp" "$rootfs"
fi

layout="$FIX/demo-oci"
if [ ! -f "$layout/.complete" ]; then
  echo "fixtures: packing the rootfs into an OCI image with umoci" >&2
  rm -rf "$layout" "$FIX/demo-bundle"
  umoci init --layout "$layout"
  umoci new --image "$layout:$SUITE"
  umoci unpack --rootless=false --image "$layout:$SUITE" "$FIX/demo-bundle" >/dev/null
  # cp -a keeps modes, owners, hardlinks, devices, xattrs.
  cp -a "$rootfs/." "$FIX/demo-bundle/rootfs/"
  umoci repack --image "$layout:$SUITE" "$FIX/demo-bundle"
  rm -rf "$FIX/demo-bundle"
  # A second layer, from a fresh unpack (repack diffs against the unpack's
  # mtree): a new file, a changed file, a deleted file and directory, so the
  # image has whiteouts.
  umoci unpack --rootless=false --image "$layout:$SUITE" "$FIX/demo-bundle" >/dev/null
  r="$FIX/demo-bundle/rootfs"
  mkdir -p "$r/opt/clip-demo"
  printf 'hello from the second layer\n' >"$r/opt/clip-demo/hello.txt"
  printf 'clip-native demo\n' >>"$r/etc/motd"
  rm -f "$r/etc/issue.net"
  rm -rf "$r/usr/share/doc/bash"
  umoci repack --image "$layout:$SUITE" "$FIX/demo-bundle"
  umoci config --image "$layout:$SUITE" --config.cmd /bin/bash >/dev/null
  umoci gc --layout "$layout"
  rm -rf "$FIX/demo-bundle"
  touch "$layout/.complete"
fi

layer="$FIX/debian-layer.tar.gz"
if [ ! -f "$layer" ]; then
  # The base layer is the largest blob in the layout.
  big=$(ls -S "$layout/blobs/sha256" | head -1)
  cp "$layout/blobs/sha256/$big" "$layer.tmp" && mv "$layer.tmp" "$layer"
fi
echo "$FIX"
