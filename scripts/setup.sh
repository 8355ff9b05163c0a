#!/usr/bin/env bash
# Installs everything clip-native needs on a fresh Debian machine, then
# builds the addon and the TypeScript. Idempotent: packages already present
# are not touched, and a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build: ISA-L, zlib, OpenSSL (SHA-256), libfuse3. Tests: clang (libFuzzer,
# sanitizers), debootstrap + umoci + skopeo (real OCI images), docker-registry
# + apache2-utils (htpasswd) + openssl (a real registry with auth), gzip peers.
# Benchmarks: python3-indexed-gzip, igzip, pigz, GNU time, squashfuse +
# squashfs-tools (the mount benchmark's FUSE peer). prometheus: its promtool
# checks the metrics export (its service is not started here). crun: the
# runtimes guide's test and the cold-start benchmark.
PACKAGES=(
  build-essential pkg-config python3
  libisal-dev isal zlib1g-dev libssl-dev libfuse3-dev fuse3
  clang libclang-rt-14-dev
  debootstrap umoci skopeo docker-registry apache2-utils openssl redis-server libcap2-bin curl
  gzip pigz tar xz-utils zstd bzip2 attr
  python3-indexed-gzip time hyperfine
  squashfuse squashfs-tools
  prometheus
  crun
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci runs the package's install script (scripts/build.sh: the addon and
# dist/). Only a changed lock file needs it again; otherwise build.sh
# rebuilds what changed, including after binding.gyp or source-list changes.
stamp=node_modules/.clip-setup-stamp
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  npm ci --no-audit --no-fund
  echo "$want" >"$stamp"
else
  npm run --silent build
fi
