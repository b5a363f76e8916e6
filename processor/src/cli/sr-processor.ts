#!/usr/bin/env -S node --initial-old-space-size=64
// The flag: V8 sizes a young process's old generation for a tiny heap, and the stream's megabyte
// buffers then drove ~10 full collections a second, a third of this process's CPU (measured).
// Starting with 64 MiB of old space brings that to about one per run. Start it through this line
// (npx, node_modules/.bin, or the file itself); tools read the flags from here.
import '@site-recovery/shared/io-threads';
import { Command, Option } from 'commander';
import {
  DEFAULT_BACKOFF,
  ErrorCode,
  SrError,
  createLogger,
  formatSize,
  intOption,
  parseHostPort,
  runCli,
  sizeOption,
  stopOnSignals,
} from '@site-recovery/shared';
import { parseWsUrl } from './options.js';
import { FileReplicaStore, DEFAULT_INLINE_WRITE_MAX_BYTES } from '../replica/file-replica-store.js';
import { DEFAULT_UNDO_BLOCK_SIZE } from '../points/file-point-store.js';
import { DEFAULT_POINT_TICK_MS } from '../points/scheduler.js';
import { DEFAULT_CACHE_STORE_UNREACHABLE_MS } from '../health.js';
import { DEFAULT_CONFIRM_INTERVAL_MS, Processor } from '../processor.js';
import { DEFAULT_CONFIRM_BYTES } from '../stream/vm-replication.js';
import { DEFAULT_MAX_DISK_BYTES, DEFAULT_MAX_RETIRED_REPLICAS } from '../stream/generation-gate.js';
import { readRegionConfig, watchRegionConfig } from '../failover/region-config.js';
import { createTargetPlanner } from '../failover/target-resources.js';
import { resolveSecurity, type SecurityCliOptions } from './processor-security.js';

const program = new Command('sr-processor')
  .description(
    'Target-region service: pull every VM stream from the cache-store, verify each record (checksum, bounds, sequence) ' +
      "and apply it in order to that VM's replica disks under the data dir; confirm to the cache-store what is durable.",
  )
  .option(
    '--listen <host:port>',
    'address of the HTTP listener (GET /health, GET /status, the /vms/VM/... control API); port 0 picks a free port',
    '127.0.0.1:8470',
  )
  .option('--cache-store <url>', 'WebSocket address of the cache-store, ws://HOST:PORT/ or wss://HOST:PORT/')
  .option(
    '--region <file>',
    'JSON description of the target region (networks with subnets and CIDRs, resourceGroup, availabilitySet, networkMapping) that failover placement follows; reloaded when the file changes',
  )
  .option(
    '--data-dir <dir>',
    'where replicas live: <dir>/replicas/<vm>/state.json and <dir>/replicas/<vm>/disks/<disk>.img (older disk layouts kept for their points under <dir>/retired/<vm>/)',
  )
  .addOption(
    new Option(
      '--confirm-interval-ms <ms>',
      'how often applied records are fsynced, their position persisted and confirmed to the cache-store',
    )
      .default(DEFAULT_CONFIRM_INTERVAL_MS)
      .argParser(intOption('--confirm-interval-ms', 1)),
  )
  .addOption(
    new Option(
      '--confirm-bytes <size>',
      'applied bytes after which a confirmation round starts before the interval is up (e.g. 64M)',
    )
      .default(DEFAULT_CONFIRM_BYTES, formatSize(DEFAULT_CONFIRM_BYTES))
      .argParser(sizeOption('--confirm-bytes', 1)),
  )
  .addOption(
    new Option(
      '--inline-write-max-bytes <size>',
      'replica writes up to this size go into the page cache synchronously (0: all through the thread pool)',
    )
      .default(DEFAULT_INLINE_WRITE_MAX_BYTES, formatSize(DEFAULT_INLINE_WRITE_MAX_BYTES))
      .argParser(sizeOption('--inline-write-max-bytes', 0)),
  )
  .addOption(
    new Option(
      '--undo-block-size <size>',
      'copy-on-write granularity of recovery point undo logs (at least 4K; a replica keeps the size its points were cut with)',
    )
      .default(DEFAULT_UNDO_BLOCK_SIZE, formatSize(DEFAULT_UNDO_BLOCK_SIZE))
      .argParser(sizeOption('--undo-block-size', 4096)),
  )
  .addOption(
    new Option('--point-tick-ms <ms>', 'how often point schedules and retention are checked')
      .default(DEFAULT_POINT_TICK_MS)
      .argParser(intOption('--point-tick-ms', 10)),
  )
  .addOption(
    new Option(
      '--reconnect-initial-ms <ms>',
      'first delay before redialling the cache-store; doubles per failure, with jitter',
    )
      .default(DEFAULT_BACKOFF.initialDelayMs)
      .argParser(intOption('--reconnect-initial-ms', 1)),
  )
  .addOption(
    new Option('--reconnect-max-ms <ms>', 'longest delay between redials of the cache-store')
      .default(DEFAULT_BACKOFF.maxDelayMs)
      .argParser(intOption('--reconnect-max-ms', 1)),
  )
  .addOption(
    new Option(
      '--cache-store-unreachable-ms <ms>',
      'GET /health answers 503 (SR_CACHE_STORE_UNREACHABLE) once no connection to the cache-store has got as far as its VM list for this long',
    )
      .default(DEFAULT_CACHE_STORE_UNREACHABLE_MS)
      .argParser(intOption('--cache-store-unreachable-ms', 0)),
  )
  .addOption(
    new Option(
      '--max-retired-replicas <n>',
      'older replicas (other disk layouts, kept for their points) a VM may keep; a generation with yet another layout is refused (SR_TOO_MANY_REPLICAS) rather than a point deleted',
    )
      .default(DEFAULT_MAX_RETIRED_REPLICAS)
      .argParser(intOption('--max-retired-replicas', 0)),
  )
  .addOption(
    new Option(
      '--max-disk-bytes <size>',
      'largest disk a source may declare; a bigger one refuses its generation (SR_LIMIT)',
    )
      .default(DEFAULT_MAX_DISK_BYTES, formatSize(DEFAULT_MAX_DISK_BYTES))
      .argParser(sizeOption('--max-disk-bytes', 1)),
  )
  .option(
    '--auth-secret-file <file>',
    "this processor's own secret (0600; sr secret new --out FILE): the control API takes only operator tokens signed with it",
  )
  .option(
    '--revoked-tokens-file <file>',
    'token ids refused by the control API, one per line (# comments); read again when it changes',
  )
  .option(
    '--cache-store-token-file <file>',
    "a processor token signed with the cache-store's secret (0600), proven to the cache-store on every connection",
  )
  .option(
    '--tls-ca <file>',
    "CA certificate that signed a wss:// cache-store's certificate (default: the system's CAs)",
  )
  .option('--tls-cert <file>', 'serve the control API over https with this certificate (PEM; with --tls-key)')
  .option('--tls-key <file>', 'private key of --tls-cert (PEM, 0600)')
  .option(
    '--allowed-hosts <hosts>',
    'Host headers the control API serves besides its listen address, comma-separated HOST or HOST:PORT (DNS rebinding)',
  )
  .option('--audit-log <file>', 'JSON lines of every action and refused credential (default <data-dir>/audit.log)')
  .option(
    '--insecure',
    'run without credentials: without --auth-secret-file the control API takes no token and listens on loopback only; ' +
      'without --cache-store-token-file the cache-store is dialled without one',
  )
  .addHelpText(
    'after',
    '\nSizes are bytes, or a number with K, M, G or T, all binary (4M = 4MiB = 4194304 bytes; 4MB is refused as ambiguous).\n' +
      'On start it prints one JSON line {"event":"ready","listen":"HOST:PORT",...} on stdout. SIGTERM or SIGINT stop it\n' +
      'cleanly: records in flight are applied, made durable and confirmed first. Logs are JSON lines on stderr\n' +
      '(SR_LOG_LEVEL=debug for more).\n' +
      'Example:\n  sr-processor --listen 10.1.0.4:8470 --cache-store wss://cache.example:7400/ --tls-ca /etc/sr/ca.pem \\\n' +
      '    --auth-secret-file /etc/sr/processor.secret --cache-store-token-file /etc/sr/processor.token \\\n' +
      '    --tls-cert /etc/sr/processor.pem --tls-key /etc/sr/processor.key --data-dir /var/lib/site-recovery/processor',
  );

interface CliOptions extends SecurityCliOptions {
  listen: string;
  region?: string;
  cacheStore?: string;
  dataDir?: string;
  confirmIntervalMs: number;
  confirmBytes: number;
  inlineWriteMaxBytes: number;
  undoBlockSize: number;
  pointTickMs: number;
  reconnectInitialMs: number;
  reconnectMaxMs: number;
  cacheStoreUnreachableMs: number;
  maxRetiredReplicas: number;
  maxDiskBytes: number;
}

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<CliOptions>();
  if (o.cacheStore === undefined) throw new SrError(ErrorCode.BAD_OPTION, '--cache-store ws://HOST:PORT/ is required');
  if (o.dataDir === undefined) throw new SrError(ErrorCode.BAD_OPTION, '--data-dir DIR is required');
  const listen = parseHostPort(o.listen, '--listen');
  const cacheStoreUrl = parseWsUrl(o.cacheStore, '--cache-store');

  const log = createLogger('sr-processor');
  const security = resolveSecurity(o, { listenHost: listen.host, cacheStoreUrl, dataDir: o.dataDir }, log);
  // Fault injection for crash tests only: die right after the Nth durable undo append, before the
  // records it protects are applied.
  const killAfter = Number(process.env['SR_TEST_KILL_AFTER_UNDO_APPENDS'] ?? 0);
  let appends = 0;
  let planner = createTargetPlanner(o.region !== undefined ? readRegionConfig(o.region) : {});
  const stopWatching =
    o.region !== undefined
      ? watchRegionConfig(o.region, (region) => (planner = createTargetPlanner(region)), log)
      : undefined;
  const processor = await Processor.start({
    store: new FileReplicaStore(o.dataDir, {
      inlineWriteMaxBytes: o.inlineWriteMaxBytes,
      undoBlockSize: o.undoBlockSize,
      ...(killAfter > 0
        ? { onUndoDurable: () => void (++appends >= killAfter && process.kill(process.pid, 'SIGKILL')) }
        : {}),
    }),
    dataDir: o.dataDir,
    cacheStoreUrl,
    targetPlanner: { plan: (input) => planner.plan(input) },
    listenHost: listen.host,
    listenPort: listen.port,
    auth: security.auth,
    ...(security.tls !== undefined ? { tls: security.tls } : {}),
    ...(security.cacheStoreCa !== undefined ? { cacheStoreCa: security.cacheStoreCa } : {}),
    log,
    options: {
      confirmIntervalMs: o.confirmIntervalMs,
      confirmBytes: o.confirmBytes,
      pointTickMs: o.pointTickMs,
      backoff: { initialDelayMs: o.reconnectInitialMs, maxDelayMs: o.reconnectMaxMs },
      cacheStoreUnreachableMs: o.cacheStoreUnreachableMs,
      maxRetiredReplicas: o.maxRetiredReplicas,
      maxDiskBytes: o.maxDiskBytes,
    },
  });
  // Handlers first: a supervisor may send SIGTERM the moment it reads the ready line.
  stopOnSignals(log, () => Promise.all([processor.close().finally(() => security.close()), stopWatching?.()]));
  process.stdout.write(
    JSON.stringify({
      event: 'ready',
      listen: processor.listen,
      tls: security.tls !== undefined,
      authentication: security.auth.verifier !== undefined,
      cacheStore: cacheStoreUrl,
      dataDir: o.dataDir,
      vms: processor.status().vms.length,
    }) + '\n',
  );
}

runCli('sr-processor', main);
