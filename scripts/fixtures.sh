#!/usr/bin/env bash
# Builds the real data the tests, the demo and the benchmarks use, once, into
# a cache that survives between runs ($CLIP_FIXTURES, default
# /var/cache/clip-native):
#   debian-bookworm-rootfs/   a minbase Debian rootfs made by debootstrap
#   demo-oci/                 an OCI image layout, tag "bookworm": two gzip
#                             layers made by umoci (the Debian rootfs, then a
#                             layer that adds, changes and deletes files)
#   debian-layer.tar.gz       the first layer's blob (a real Debian layer)
# With --bench (bench/run.sh only; the tests do not need it), also:
#   debian-$SUITE-python-rootfs/  debootstrap minbase + python3
#   bench-oci/                the cold-start image, tag "bench", five gzip
#                             layers: the demo image's two, Debian's python3
#                             (the python rootfs copied over the base), the
#                             project's node_modules in /app, a 48 MiB file
# Prints nothing but progress on stderr; safe to run again (it reuses what exists).
set -euo pipefail
FIX=${CLIP_FIXTURES:-/var/cache/clip-native}
SUITE=${CLIP_DEBIAN_SUITE:-bookworm}
MIRROR=${CLIP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$FIX"

# bootstrap DIR LOG [DEBOOTSTRAP OPTIONS...]: a minbase Debian rootfs in DIR, once.
bootstrap() {
  local dir=$1 logfile=$2
  shift 2
  [ -d "$dir" ] && return 0
  echo "fixtures: debootstrap --variant=minbase $* $SUITE (a few minutes, once)" >&2
  rm -rf "$dir.tmp"
  debootstrap --variant=minbase "$@" "$SUITE" "$dir.tmp" "$MIRROR" >"$logfile" 2>&1 ||
    { tail -20 "$logfile" >&2; exit 1; }
  mv "$dir.tmp" "$dir"
}

rootfs="$FIX/debian-$SUITE-rootfs"
bootstrap "$rootfs" "$FIX/debootstrap.log"

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
if [ "${1:-}" = "--bench" ]; then
  pyroot="$FIX/debian-$SUITE-python-rootfs"
  bootstrap "$pyroot" "$FIX/debootstrap-python.log" --include=python3
  bench="$FIX/bench-oci"
  if [ ! -f "$bench/.complete" ]; then
    echo "fixtures: building the cold-start image (python, node_modules, a large file) with umoci" >&2
    rm -rf "$bench" "$FIX/bench-bundle"
    cp -a "$layout" "$bench"
    rm -f "$bench/.complete"
    umoci tag --image "$bench:$SUITE" bench
    umoci rm --image "$bench:$SUITE"
    umoci unpack --rootless=false --image "$bench:bench" "$FIX/bench-bundle" >/dev/null
    r="$FIX/bench-bundle/rootfs"
    # Python from Debian: the second debootstrap over the first leaves the
    # python3 packages plus what their install changed (dpkg status, caches)
    # as the diff; --refresh-bundle lets the next layer diff against this one.
    # The .deb files both debootstraps downloaded go, as `apt-get clean` does.
    cp -a "$pyroot/." "$r/"
    rm -f "$r"/var/cache/apt/archives/*.deb
    umoci repack --refresh-bundle --image "$bench:bench" "$FIX/bench-bundle"
    repo=$(cd "$(dirname "$0")/.." && pwd)
    mkdir -p "$r/app"
    cp -a "$(readlink -f "$repo/node_modules")" "$r/app/node_modules"
    cp "$repo/package.json" "$r/app/"
    umoci repack --refresh-bundle --image "$bench:bench" "$FIX/bench-bundle"
    # A large file no start-up reads (a model, a dataset): incompressible,
    # deterministic bytes (AES-CTR of zeros under a fixed key).
    mkdir -p "$r/app/data"
    head -c $((48 << 20)) /dev/zero |
      openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 >"$r/app/data/weights.bin"
    umoci repack --image "$bench:bench" "$FIX/bench-bundle"
    umoci config --image "$bench:bench" --config.cmd python3 --config.workingdir /app >/dev/null
    umoci gc --layout "$bench"
    rm -rf "$FIX/bench-bundle"
    touch "$bench/.complete"
  fi
fi
echo "$FIX"
