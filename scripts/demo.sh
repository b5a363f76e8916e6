#!/usr/bin/env bash
# The main job on a fresh machine: set-up, then protect a sample VM end to end on this machine — a
# cache-store, a processor and an agent serving a 1 GiB sample disk over NBD. Ctrl-C stops all three.
# Authentication is on, set up as an operator would (docs/security.md): each daemon that checks tokens
# gets its own secret, and every holder its own token, all in files only their owner may read.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
demo=$PWD/.tmp/demo
creds=$demo/credentials
mkdir -p "$demo" "$creds"
chmod 700 "$creds"
[ -f "$demo/web01-os.img" ] || truncate -s 1G "$demo/web01-os.img"
nbd=${SR_DEMO_NBD_PORT:-10809}
cs=${SR_DEMO_CACHE_STORE_PORT:-7400}
pr=${SR_DEMO_PROCESSOR_PORT:-8470}
# The built CLIs, run through their shebang (it carries their node flags) as the npm bins would be.
sr=processor/dist/cli/sr.js

# Secrets are made once and kept with the data they protect; tokens are issued afresh on every run
# (sr token issue --out never overwrites a file), so none runs into its expiry.
[ -f "$creds/cache-store.secret" ] || "$sr" secret new --out "$creds/cache-store.secret" > /dev/null
[ -f "$creds/processor.secret" ] || "$sr" secret new --out "$creds/processor.secret" > /dev/null
rm -f "$creds"/*.token
"$sr" token issue --secret-file "$creds/cache-store.secret" --vm web01 --id agent-web01 --out "$creds/web01.token" > /dev/null
"$sr" token issue --secret-file "$creds/cache-store.secret" --role processor --id processor \
  --out "$creds/processor.token" > /dev/null
"$sr" token issue --secret-file "$creds/processor.secret" --role operator --id demo-operator \
  --out "$creds/operator.token" > /dev/null

cache-store/dist/cli/sr-cache-store.js --listen "127.0.0.1:$cs" --data-dir "$demo/cache-store" \
  --auth-secret-file "$creds/cache-store.secret" > /dev/null &
pids=$!
processor/dist/cli/sr-processor.js --listen "127.0.0.1:$pr" --cache-store "ws://127.0.0.1:$cs/" --data-dir "$demo/processor" \
  --auth-secret-file "$creds/processor.secret" --cache-store-token-file "$creds/processor.token" > /dev/null &
pids="$pids $!"
trap 'kill $pids 2>/dev/null; wait' EXIT
cat <<MSG
cache-store on 127.0.0.1:$cs, processor on http://127.0.0.1:$pr, agent for VM web01 on nbd://127.0.0.1:$nbd/os.
Credentials are in $creds (the operator token is what sr presents). Try, in another shell:
  qemu-io -f raw nbd://127.0.0.1:$nbd/os -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M'
  fio --name=w --ioengine=nbd --uri=nbd://127.0.0.1:$nbd/os --rw=randwrite --bs=4k --size=256m --runtime=10 --time_based
  curl -s http://127.0.0.1:$pr/health
  alias sr=$PWD/$sr
  export SR_PROCESSOR_URL=http://127.0.0.1:$pr SR_TOKEN_FILE=$creds/operator.token
  sr status
  sr points web01
  sr test-failover web01 --point latest-processed --network iso --json
Without the token the processor refuses every call but GET /health:
  env -u SR_TOKEN_FILE $PWD/$sr status
MSG
agent/dist/cli/sr-agent.js --vm web01 --disk "os=$demo/web01-os.img" --nbd "127.0.0.1:$nbd" --data-dir "$demo/agent" \
  --cache-store "ws://127.0.0.1:$cs" --token-file "$creds/web01.token" --status 127.0.0.1:0
