#!/usr/bin/env bash
# Runs a command after set-up (used by the npm bench scripts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
exec "$@"
