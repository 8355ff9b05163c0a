#!/usr/bin/env bash
# The main job on the embedded default, on a fresh machine (README: `npm run demo`):
# set up, build a real Debian OCI image (debootstrap + umoci) into an OCI
# layout directory, index every layer of it in one pass each, and read a
# file back through the checkpoints, checked against the rootfs it came from.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
FIX=$(bash scripts/fixtures.sh)
cli="node dist/src/cli/main.js"
layout="$FIX/demo-oci"
layers=$(node -e '
  const fs = require("fs"), path = require("path");
  const dir = process.argv[1];
  const index = JSON.parse(fs.readFileSync(path.join(dir, "index.json")));
  const blob = (d) => path.join(dir, "blobs", ...d.split(":"));
  const manifest = JSON.parse(fs.readFileSync(blob(index.manifests[0].digest)));
  for (const l of manifest.layers) console.log(blob(l.digest));
' "$layout")
for blob in $layers; do
  $cli layer index "$blob"
done
base=$(echo "$layers" | head -1)
echo "== usr/lib/os-release, read from the base layer through its checkpoints:"
$cli layer cat "$base" usr/lib/os-release | tee /tmp/clip-demo-os-release
cmp /tmp/clip-demo-os-release "$FIX/debian-bookworm-rootfs/usr/lib/os-release" && echo "== identical to the rootfs it was packed from"
