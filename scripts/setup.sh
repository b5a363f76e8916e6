#!/usr/bin/env bash
# Everything a fresh machine of this kind needs before the project runs: system tools the tests and
# the demo drive, npm packages, and the TypeScript build. Safe to run again; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's python3-libnbd (nbdsh) must see Debian's python3 first (DESIGN.md).
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

declare -A PKG_OF=([qemu-io]=qemu-utils [qemu-img]=qemu-utils [qemu-nbd]=qemu-utils [nbdinfo]=libnbd-bin \
  [nbdcopy]=libnbd-bin [nbdsh]=python3-libnbd [fio]=fio [nbdkit]=nbdkit [rsync]=rsync)
missing_pkgs=()
for tool in "${!PKG_OF[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing_pkgs+=("${PKG_OF[$tool]}")
done
if [ "${#missing_pkgs[@]}" -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing_pkgs[@]}" | sort -u | tr '\n' ' ')
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing $pkgs"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
  else
    echo "setup: these system packages are missing: $pkgs" >&2
    echo "setup: install them (sudo apt-get install -y $pkgs) and run this again" >&2
    exit 1
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages"
  npm ci --no-audit --no-fund
fi
npx tsc -b
chmod +x agent/dist/cli/*.js cache-store/dist/cli/*.js processor/dist/cli/*.js 2>/dev/null || true
