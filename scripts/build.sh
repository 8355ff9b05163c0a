#!/usr/bin/env bash
# Builds the addon (incrementally once configured) and the TypeScript.
# CLIP_SANITIZE=1 builds the addon with ASan + UBSan into the same place.
set -euo pipefail
cd "$(dirname "$0")/.."
# Reconfigure when the flavor, binding.gyp or the set of native sources
# changes (gyp lists the sources at configure time).
want="sanitize=${CLIP_SANITIZE:-0} $( (cat binding.gyp; ls native/core/*.cc native/binding/*.cc native/fuse/*.cc 2>/dev/null) | sha256sum | cut -c1-16)"
# Build against the headers of the node that runs us (never download them).
nodedir=$(dirname "$(dirname "$(command -v node)")")
[ -f "$nodedir/include/node/node_api.h" ] || { echo "build: no Node headers under $nodedir/include/node" >&2; exit 1; }
# node-gyp ships inside npm; npm scripts name it in npm_config_node_gyp.
gyp=${npm_config_node_gyp:-$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js}
[ -f "$gyp" ] || { echo "build: node-gyp not found at $gyp" >&2; exit 1; }
if [ ! -f build/config.gypi ] || [ "$(cat build/.clip-flavor 2>/dev/null)" != "$want" ]; then
  node "$gyp" configure --nodedir="$nodedir"
  echo "$want" >build/.clip-flavor
fi
node "$gyp" build -j 2
npx --no-install tsc -p tsconfig.json
