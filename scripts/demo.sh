#!/usr/bin/env bash
# The main job on the embedded default, on a fresh machine (README: `npm run demo`):
# set up, build a real two-layer Debian OCI image (debootstrap + umoci) into an
# OCI layout directory, index it once into a metadata-only .clip archive,
# show what it holds, read a file back through the layer's checkpoints, then
# mount the merged tree over FUSE with a disk cache and run the image's own
# shell from it: each step checked against the rootfs the image was packed from.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
FIX=$(bash scripts/fixtures.sh)
cli="node dist/src/cli/main.js --log-level warn"
archive="${CLIP_DEMO_ARCHIVE:-$FIX/demo.clip}"

echo "== clip-native index oci:$FIX/demo-oci:bookworm"
$cli index "oci:$FIX/demo-oci:bookworm" -o "$archive"
echo "== clip-native inspect"
$cli inspect "$archive"
echo "== clip-native ls -l /opt/clip-demo (added by the second layer; /etc/issue.net was whited out)"
$cli ls "$archive" /opt/clip-demo -l
if $cli ls "$archive" /etc/issue.net >/dev/null 2>&1; then echo "whiteout not applied" >&2; exit 1; fi
base=$(node -e '
  const fs = require("fs"), path = require("path");
  const dir = process.argv[1];
  const index = JSON.parse(fs.readFileSync(path.join(dir, "index.json")));
  const blob = (d) => path.join(dir, "blobs", ...d.split(":"));
  const manifest = JSON.parse(fs.readFileSync(blob(index.manifests[0].digest)));
  console.log(blob(manifest.layers[0].digest));
' "$FIX/demo-oci")
echo "== usr/lib/os-release, read from the base layer through its checkpoints:"
$cli layer cat "$base" usr/lib/os-release | tee /tmp/clip-demo-os-release
cmp /tmp/clip-demo-os-release "$FIX/debian-bookworm-rootfs/usr/lib/os-release" && echo "== identical to the rootfs it was packed from"

mp=$(mktemp -d /tmp/clip-demo-mnt.XXXXXX)
cache="${CLIP_DEMO_CACHE:-$FIX/demo-cache}"   # kept: a second run reads from it
trap '$cli umount "$mp" >/dev/null 2>&1 || true; rmdir "$mp" 2>/dev/null || true' EXIT
echo "== clip-native mount $archive $mp --cache-dir $cache --prefetch eager"
echo "   (each layer is filled into the disk cache, verified against its diff_id, before its first read is answered;"
echo "    the default, background, answers from checkpoint spans of the blobs meanwhile)"
$cli mount "$archive" "$mp" --cache-dir "$cache" --prefetch eager
echo "== chroot $mp /bin/sh: the image's own shell and files"
chroot "$mp" /bin/sh -c '. /etc/os-release; echo "$PRETTY_NAME"; cat /opt/clip-demo/hello.txt; ls /usr/bin | wc -l'
cmp "$mp/usr/bin/bash" "$FIX/debian-bookworm-rootfs/usr/bin/bash" && echo "== /usr/bin/bash through the mount is identical to the rootfs's"
$cli umount "$mp"
echo "== clip-native cache ls --cache-dir $cache"
$cli cache ls --cache-dir "$cache"
