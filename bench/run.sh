#!/usr/bin/env bash
# Runs the benchmarks (README: `npm run bench`, or `npm run bench -- --quick`):
# the engine (bench/engine.ts), image indexing (bench/image.ts) and the
# storage tiers (bench/storage.ts) and the mount (bench/mount.ts).
# Prepares its data first: the Debian layer from scripts/fixtures.sh and a
# 1 GiB layer (six copies of the Debian tar stream in one file) for memory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
FIX=$(bash scripts/fixtures.sh)
export CLIP_DEBIAN_LAYER="$FIX/debian-layer.tar.gz"
export CLIP_BIG_LAYER="$FIX/big-layer-1g.tar.gz"
if [ ! -f "$CLIP_BIG_LAYER" ]; then
  echo "bench: building a 1 GiB layer (once)" >&2
  tmp=$(mktemp -d)
  for i in 1 2 3 4 5 6; do gzip -dc "$CLIP_DEBIAN_LAYER"; done >"$tmp/debian-x6.bin"
  tar -C "$tmp" -cf - debian-x6.bin | pigz -6 >"$CLIP_BIG_LAYER.tmp"
  mv "$CLIP_BIG_LAYER.tmp" "$CLIP_BIG_LAYER"
  rm -rf "$tmp"
fi
make -C native -j 2 tools >/dev/null
mkdir -p bench/out
export CLIP_DEMO_OCI="$FIX/demo-oci"
node dist/bench/engine.js "$@"
node dist/bench/image.js "$@"
node dist/bench/storage.js "$@"
node dist/bench/mount.js "$@"
