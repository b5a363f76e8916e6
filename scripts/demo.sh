#!/usr/bin/env bash
# The main job on a fresh machine: set-up, then protect a sample VM end to end on this machine — a
# cache-store, a processor and an agent serving a 1 GiB sample disk over NBD. Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
demo=.tmp/demo
mkdir -p "$demo"
[ -f "$demo/web01-os.img" ] || truncate -s 1G "$demo/web01-os.img"
nbd=${SR_DEMO_NBD_PORT:-10809}
cs=${SR_DEMO_CACHE_STORE_PORT:-7400}
pr=${SR_DEMO_PROCESSOR_PORT:-8470}
node_modules/.bin/sr-cache-store --listen "127.0.0.1:$cs" --data-dir "$demo/cache-store" > /dev/null &
pids=$!
node_modules/.bin/sr-processor --listen "127.0.0.1:$pr" --cache-store "ws://127.0.0.1:$cs/" --data-dir "$demo/processor" > /dev/null &
pids="$pids $!"
trap 'kill $pids 2>/dev/null; wait' EXIT
cat <<MSG
cache-store on 127.0.0.1:$cs, processor on http://127.0.0.1:$pr (GET /status), agent for VM web01 on
nbd://127.0.0.1:$nbd/os. Try, in another shell:
  qemu-io -f raw nbd://127.0.0.1:$nbd/os -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M'
  fio --name=w --ioengine=nbd --uri=nbd://127.0.0.1:$nbd/os --rw=randwrite --bs=4k --size=256m --runtime=10 --time_based
  curl -s http://127.0.0.1:$pr/status
  SR_PROCESSOR_URL=http://127.0.0.1:$pr npx sr points web01
  SR_PROCESSOR_URL=http://127.0.0.1:$pr npx sr test-failover web01 --point latest-processed --network iso --json
MSG
node_modules/.bin/sr-agent --vm web01 --disk "os=$demo/web01-os.img" --nbd "127.0.0.1:$nbd" --data-dir "$demo/agent" \
  --cache-store "ws://127.0.0.1:$cs" --status 127.0.0.1:0
