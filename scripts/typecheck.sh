#!/usr/bin/env bash
# Type-checks everything: the sources (tsc -b builds them), each workspace's tests, and the tooling.
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc -b
for ws in shared agent cache-store processor test; do
  npx tsc -p "$ws/tsconfig.test.json" --noEmit
done
npx tsc -p tsconfig.tools.json --noEmit
