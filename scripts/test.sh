#!/usr/bin/env bash
# The whole test suite, as CI runs it (README: `npm test`). Sets up the
# machine first (packages, addon build, fixtures), so it works on a fresh one.
#   1. native core unit tests (no Node), release build
#   2. the same under AddressSanitizer + UBSan
#   3. each libFuzzer target for FUZZ_SECONDS over the committed corpus
#   4. the addon-facing TypeScript tests against an ASan + UBSan addon
#   5. every TypeScript test against the release addon (node --test)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
FIX=$(bash scripts/fixtures.sh)
export CLIP_DEBIAN_LAYER="$FIX/debian-layer.tar.gz"
export CLIP_DEMO_OCI="$FIX/demo-oci"
export CLIP_FIXTURES="$FIX"

echo "== native core tests (release)"
make -C native -j 2 test
echo "== native core tests (ASan + UBSan)"
make -C native -j 2 test SAN=1
echo "== fuzzing (${FUZZ_SECONDS:=20}s per target)"
make -C native -j 2 fuzz-run FUZZ_SECONDS="$FUZZ_SECONDS"
echo "== TypeScript tests against the ASan + UBSan addon"
bash scripts/test-asan.sh dist/test/engine.test.js dist/test/cli.test.js dist/test/archive.test.js
echo "== TypeScript tests"
npm run --silent test:ts
