#!/usr/bin/env bash
# The TypeScript tests that drive the addon, against an addon built with
# AddressSanitizer + UBSan (the opt-in CLIP_SANITIZE=1 build), then the
# release addon is rebuilt so the tree is left as it was. Node itself is not
# instrumented, so its allocations are not leak-checked (detect_leaks=0).
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'bash scripts/build.sh >/dev/null' EXIT
CLIP_SANITIZE=1 bash scripts/build.sh >/dev/null
preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 LD_PRELOAD="$preload" \
  node --test --test-concurrency=1 "${@:-dist/test/engine.test.js}"
