#!/usr/bin/env bash
# Runs every benchmark, then writes the report (README: `npm run bench`, or
# `npm run bench -- --quick` for a smoke check in under 3 minutes):
#   engine     bench/engine.ts     the native engine vs igzip and indexed_gzip
#   image      bench/image.ts      indexing from a registry vs a pull
#   storage    bench/storage.ts    the storage tiers
#   mount      bench/mount.ts      the FUSE mount vs squashfuse_ll and plain files
#   coldstart  bench/coldstart.ts  a program's cold start vs a full pull
# Each writes bench/out/NAME.json (and NAME.md); bench/report.ts then turns
# them into bench/out/report.md with SVG plots. Give names to run only
# those: `npm run bench -- --quick mount coldstart` (the report covers every
# result file present).
# Prepares its data first: the fixtures (scripts/fixtures.sh --bench: the
# Debian layer, the demo image, the cold-start image) and a 1 GiB layer (six
# copies of the Debian tar stream in one file) for memory figures.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=()
names=()
for a in "$@"; do
  case "$a" in
    --*) flags+=("$a") ;;
    *) names+=("$a") ;;
  esac
done
((${#names[@]})) || names=(engine image storage mount coldstart)

bash scripts/setup.sh >&2
FIX=$(bash scripts/fixtures.sh --bench)
export CLIP_FIXTURES="$FIX"
export CLIP_DEBIAN_LAYER="$FIX/debian-layer.tar.gz"
export CLIP_BIG_LAYER="$FIX/big-layer-1g.tar.gz"
export CLIP_DEMO_OCI="$FIX/demo-oci"
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
for name in "${names[@]}"; do
  [ -f "dist/bench/$name.js" ] || { echo "bench: no benchmark named $name" >&2; exit 2; }
  rm -f "bench/out/$name.json"
done
for name in "${names[@]}"; do
  start=$SECONDS
  echo "bench: == $name" >&2
  node "dist/bench/$name.js" "${flags[@]}"
  echo "bench: $name took $((SECONDS - start)) s" >&2
done
node dist/bench/report.js
