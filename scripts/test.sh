#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, type check, lint, then every test (none skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
npx eslint .
npx vitest run "$@"
