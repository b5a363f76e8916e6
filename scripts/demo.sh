#!/usr/bin/env bash
# The main job on a fresh machine: set-up, then protect a sample VM. It creates a 1 GiB sample disk
# image and starts an agent serving it over NBD; point any NBD client (qemu, fio, nbdcopy) at it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
demo=.tmp/demo
mkdir -p "$demo"
[ -f "$demo/web01-os.img" ] || truncate -s 1G "$demo/web01-os.img"
port=${SR_DEMO_NBD_PORT:-10809}
cat <<MSG
Starting sr-agent for VM web01 on nbd://127.0.0.1:$port/os (Ctrl-C stops it). Try, in another shell:
  qemu-io -f raw nbd://127.0.0.1:$port/os -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M'
  fio --name=w --ioengine=nbd --uri=nbd://127.0.0.1:$port/os --rw=randwrite --bs=4k --size=256m --runtime=10 --time_based
  npx sr-journal verify --data-dir $demo/agent   (after stopping the agent)
MSG
exec node agent/dist/cli.js --vm web01 --disk "os=$demo/web01-os.img" --nbd "127.0.0.1:$port" --data-dir "$demo/agent"
