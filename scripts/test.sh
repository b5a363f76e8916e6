#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, formatter, type check of sources and tests, lint,
# then every test (none skipped: a skipped or todo test fails the run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
npx prettier --check . --log-level warn
bash scripts/typecheck.sh
npx eslint .
npx vitest run "$@"
