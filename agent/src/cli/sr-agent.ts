#!/usr/bin/env -S node --initial-old-space-size=64
// The flag: V8 sizes a young process's old generation for a tiny heap, and the stream's megabyte
// buffers then drove ~10 full collections a second, a third of this process's CPU (measured).
// Starting with 64 MiB of old space brings that to about one per run. Start it through this line
// (npx, node_modules/.bin, or the file itself); tools read the flags from here.
import '@site-recovery/shared/io-threads';
import { Command, Option } from 'commander';
import {
  ErrorCode,
  SrError,
  DIRECT_IO_ALIGNMENT,
  createLogger,
  formatSize,
  intOption,
  isLoopbackHost,
  parseDuration,
  parseHostPort,
  parseSize,
  runCli,
  sizeOption,
  stopOnSignals,
  type Logger,
} from '@site-recovery/shared';
import { DEFAULT_NBD_LIMITS } from '@site-recovery/shared/nbd';
import { Agent } from '../agent.js';
import { DEFAULT_CHECKPOINT_INTERVAL_MS, DEFAULT_HEALTH_DISCONNECTED_MS } from '../agent-config.js';
import { DEFAULT_SUMS_OPTIONS } from '../replication/sums-exchange.js';
import { cacheStoreLink, checkLoopbackListen } from './cache-store-options.js';
import { DEFAULT_GROUP_PORT, DEFAULT_HOLD_TIMEOUT_MS, MAX_HOLD_TIMEOUT_MS } from '../group/group-config.js';
import { groupFromOptions, journalSizes, parseDisk, readConfigFile } from './options.js';
import {
  DEFAULT_DIRECT_WRITE_MIN_BYTES,
  DEFAULT_JOURNAL_MAX_BYTES,
  DEFAULT_SEGMENT_BYTES,
  MIN_JOURNAL_MAX_BYTES,
  MIN_SEGMENTS_PER_CAP,
  MIN_SEGMENT_BYTES,
} from '../journal/file-journal-options.js';
import { serveStatus, type StatusSource } from './status-server.js';
import { WatchAgent } from '../watch/watch-agent.js';
import { addWatchOptions, checkModeOptions, watchOptionsFrom } from '../watch/watch-cli.js';

const NBD_RISK = "NBD has no authentication here: anyone who reaches the port reads and writes the VM's disks";
const STATUS_RISK = 'anyone who reaches it learns the VM, its disks and its replication generation';

const program = new Command('sr-agent')
  .description(
    'Protect one VM: serve each of its disk images over NBD, write every block write to the image and, in order, to a\n' +
      'checksummed journal in the data dir. Point the VM at nbd://HOST:PORT/DISK-ID instead of the image file.\n' +
      'With --mode watch it serves nothing: it watches image files another process writes and ships the blocks that\n' +
      'changed (by checksum); recovery points are cut only at scans no write overlapped.',
  )
  .option('--vm <name>', 'name of the VM (letters, digits, . - _); names the replication stream')
  .option(
    '--disk <id=path>',
    'a disk of the VM: export name ID serving the raw image at PATH (repeat per disk)',
    collect,
    [],
  )
  .option(
    '--nbd <host:port>',
    'address the NBD listener binds to, loopback unless --nbd-allow-remote; port 0 picks a free port',
    '127.0.0.1:10809',
  )
  .option(
    '--nbd-allow-remote',
    `let --nbd bind a non-loopback address. RISK: ${NBD_RISK}; use it only where nothing untrusted can reach that address`,
  )
  .option('--data-dir <dir>', 'where the agent keeps its journal and state (one directory per VM)')
  .addOption(
    new Option(
      '--journal-segment-bytes <size>',
      `size at which a journal segment file is closed and a new one begun (default: an eighth of --journal-max-bytes, ${formatSize(MIN_SEGMENT_BYTES)} to ${formatSize(DEFAULT_SEGMENT_BYTES)}); the cap must hold at least ${MIN_SEGMENTS_PER_CAP}`,
    ).argParser(sizeOption('--journal-segment-bytes', MIN_SEGMENT_BYTES)),
  )
  .addOption(
    new Option(
      '--journal-max-bytes <size>',
      `cap on the journal's disk space (e.g. 4M, 10G; at least ${formatSize(MIN_JOURNAL_MAX_BYTES)}); past it the agent tracks dirty regions in a bitmap and resyncs them once the cache-store catches up (the VM's writes never wait)`,
    )
      .default(DEFAULT_JOURNAL_MAX_BYTES, formatSize(DEFAULT_JOURNAL_MAX_BYTES))
      .argParser(sizeOption('--journal-max-bytes', MIN_JOURNAL_MAX_BYTES)),
  )
  .addOption(
    new Option(
      '--journal-direct-writes <size|off>',
      'journal group writes of at least this size bypass the page cache (O_DIRECT, where the filesystem allows it); off keeps them all buffered',
    )
      .default(DEFAULT_DIRECT_WRITE_MIN_BYTES, formatSize(DEFAULT_DIRECT_WRITE_MIN_BYTES))
      .argParser(directArg),
  )
  .addOption(
    new Option(
      '--max-bandwidth <rate>',
      "cap on what replication sends to the cache-store, in bytes per second of wire traffic (e.g. 20M = 20 MiB/s); the VM's writes are never slowed by it, the journal takes up the difference. 0: no limit",
    )
      .default(0, 'no limit')
      .argParser(sizeOption('--max-bandwidth', 0)),
  )
  .option(
    '--cache-store <url>',
    'replicate to the cache-store at this ws:// or wss:// URL (without it the agent only journals); needs --token-file or --insecure',
  )
  .option(
    '--token-file <file>',
    "this VM's agent token, in a file only its owner may read; it lets the agent stream this one VM to the cache-store and nothing else. Issue it on the cache-store's host: sr token issue --secret-file <cache-store secret> --vm NAME --out FILE",
  )
  .option(
    '--tls-ca <file>',
    "PEM CA certificate a wss:// cache-store's certificate must chain to (default: the system's CAs)",
  )
  .option(
    '--insecure',
    'replicate without a token, to a cache-store that runs without authentication (--insecure, loopback only)',
  )
  .option(
    '--resync',
    "start a new replication generation: compare every block with the replica's and send those that differ",
  )
  .option(
    '--sums-wait <duration>',
    "a new generation's initial copy waits this long without a word of the replica's block sums, then sends every block instead (logged, shown in the status)",
    `${DEFAULT_SUMS_OPTIONS.waitMs / 60_000}m`,
  )
  .option(
    '--status <host:port>',
    'serve GET /status and GET /health (JSON; 503 when unhealthy) on this address, loopback unless --status-allow-remote',
  )
  .option('--status-allow-remote', `let --status bind a non-loopback address: ${STATUS_RISK} (no authentication)`)
  .option(
    '--health-disconnected-after <duration>',
    'GET /health reports the cache-store unreachable once the stream has been down this long',
    `${DEFAULT_HEALTH_DISCONNECTED_MS / 1000}s`,
  )
  .addOption(
    new Option(
      '--max-nbd-connections <n>',
      'NBD connections open at once; one more is closed on accept (counted as refusedConnections in the status)',
    )
      .default(DEFAULT_NBD_LIMITS.maxConnections)
      .argParser(intOption('--max-nbd-connections', 1)),
  )
  .option(
    '--app-consistent-frequency <duration>',
    'take an app-consistent point this often (e.g. 60m); off unless given or a pre-snapshot command is set (then 60m)',
  )
  .option(
    '--pre-snapshot <command>',
    'shell command that quiesces the applications before an app-consistent point (e.g. "fsfreeze -f /data")',
  )
  .option(
    '--post-snapshot <command>',
    'shell command that resumes them afterwards (e.g. "fsfreeze -u /data"); runs even if the pre command failed',
  )
  .addOption(
    new Option(
      '--checkpoint-interval <ms>',
      'how often the images are fsynced; after a crash the journal is replayed from the last such point, and shipped journal segments are released only below it (also taken early when the journal passes half its cap)',
    )
      .default(DEFAULT_CHECKPOINT_INTERVAL_MS)
      .argParser(intOption('--checkpoint-interval (milliseconds)', 100)),
  )
  .option(
    '--group <name>',
    "this VM's replication group: its members cut multi-VM points together (docs/multi-vm.md); needs --group-secret-file and --peers",
  )
  .option(
    '--group-secret-file <file>',
    'the secret every member of the group holds, in a file only its owner may read (make one with: sr secret new --out FILE)',
  )
  .option(
    '--peers <vm=host:port,...>',
    `every member of the group, this VM included, each with the address the others reach it on (port default ${DEFAULT_GROUP_PORT})`,
  )
  .option(
    '--group-listen <host:port>',
    'address the group listener binds to (default: the address of this VM in --peers); peers authenticate with the group secret',
  )
  .option(
    '--group-hold-timeout <duration>',
    `longest a group point holds the VM's write replies waiting for the coordinator's COMMIT (default ${DEFAULT_HOLD_TIMEOUT_MS}ms, at most ${MAX_HOLD_TIMEOUT_MS}ms); a round that takes longer is aborted`,
  )
  .option(
    '--config <file>',
    'JSON file with the same keys (vm, disk, nbd, dataDir, journalSegmentBytes, cacheStore, tokenFile, tlsCa); options given here win',
  )
  .addHelpText(
    'after',
    `\nSizes are bytes, or a number with K, M, G or T, all binary (4M = 4MiB = 4194304 bytes; 4MB is refused as ambiguous).` +
      '\nOn start it prints one JSON line {"event":"ready",...} on stdout with the bound NBD address.\n' +
      'Example:\n  sr-agent --vm web01 --disk os=/vm/web01-os.img --disk data=/vm/web01-data.img --nbd 127.0.0.1:10809 --data-dir /var/lib/sr/web01' +
      '\n  sr-agent --mode watch --vm files01 --disk data=/srv/files01.img --data-dir /var/lib/sr/files01 --cache-store wss://cache:7400 --token-file files01.token',
  );

addWatchOptions(program);

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function directArg(value: string): number {
  if (value === 'off') return Infinity;
  const n = parseSize(value, '--journal-direct-writes (a size or "off")');
  if (n < DIRECT_IO_ALIGNMENT)
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `--journal-direct-writes "${value}" must be "off" or a size of at least one page, ${formatSize(DIRECT_IO_ALIGNMENT)} (${DIRECT_IO_ALIGNMENT} bytes)`,
    );
  return n;
}

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<{
    vm?: string;
    disk: string[];
    nbd: string;
    dataDir?: string;
    journalSegmentBytes?: number;
    journalMaxBytes: number;
    journalDirectWrites: number;
    maxBandwidth: number;
    config?: string;
    cacheStore?: string;
    tokenFile?: string;
    tlsCa?: string;
    insecure?: boolean;
    nbdAllowRemote?: boolean;
    statusAllowRemote?: boolean;
    resync?: boolean;
    sumsWait: string;
    status?: string;
    healthDisconnectedAfter: string;
    maxNbdConnections: number;
    checkpointInterval: number;
    appConsistentFrequency?: string;
    preSnapshot?: string;
    postSnapshot?: string;
    group?: string;
    groupSecretFile?: string;
    groupListen?: string;
    peers?: string;
    groupHoldTimeout?: string;
    mode: 'nbd' | 'watch';
    watchBlockSize: number;
    watchDebounce: string;
    watchMaxDelay: string;
    watchRescanInterval: string;
  }>();
  const file = o.config !== undefined ? readConfigFile(o.config) : {};
  const fromCli = (k: string): boolean => program.getOptionValueSource(k) === 'cli';
  const vm = o.vm ?? file.vm;
  const dataDir = o.dataDir ?? file.dataDir;
  const disks = (o.disk.length > 0 ? o.disk : (file.disk ?? [])).map(parseDisk);
  const nbd = parseHostPort(fromCli('nbd') || file.nbd === undefined ? o.nbd : file.nbd, '--nbd');
  const journal = journalSizes(o.journalMaxBytes, o.journalSegmentBytes ?? file.journalSegmentBytes);
  if (vm === undefined) throw new SrError(ErrorCode.BAD_OPTION, '--vm NAME is required');
  if (dataDir === undefined) throw new SrError(ErrorCode.BAD_OPTION, '--data-dir DIR is required');
  if (disks.length === 0) throw new SrError(ErrorCode.BAD_OPTION, 'at least one --disk ID=PATH is required');
  checkModeOptions(program, o.mode);
  const watch = o.mode === 'watch' ? watchOptionsFrom(o) : undefined;

  checkLoopbackListen(nbd.host, o.nbdAllowRemote === true, '--nbd', NBD_RISK);
  const log = createLogger('sr-agent');
  const link = cacheStoreLink(
    {
      vm,
      url: o.cacheStore ?? file.cacheStore,
      tokenFile: o.tokenFile ?? file.tokenFile,
      tlsCa: o.tlsCa ?? file.tlsCa,
      insecure: o.insecure === true,
    },
    log,
  );
  const cacheStore = link?.url;
  const statusAddr = o.status !== undefined ? parseHostPort(o.status, '--status') : undefined;
  if (statusAddr !== undefined)
    checkLoopbackListen(statusAddr.host, o.statusAllowRemote === true, '--status', STATUS_RISK);
  const disconnectedMs = parseDuration(o.healthDisconnectedAfter, '--health-disconnected-after');
  if (watch !== undefined) {
    if (link === undefined)
      throw new SrError(ErrorCode.BAD_OPTION, '--mode watch replicates: add --cache-store URL (and --token-file)');
    const agent = await WatchAgent.start({
      vm,
      disks,
      dataDir,
      journal: { ...journal, directWriteMinBytes: o.journalDirectWrites },
      health: { disconnectedMs },
      log,
      watch,
      replication: {
        ...link,
        resync: o.resync === true,
        ...(o.maxBandwidth > 0 ? { shipper: { maxBytesPerSecond: o.maxBandwidth } } : {}),
      },
    });
    await announce(agent, statusAddr, log);
    return;
  }
  const appFrequency =
    o.appConsistentFrequency !== undefined
      ? parseDuration(o.appConsistentFrequency, '--app-consistent-frequency')
      : o.preSnapshot !== undefined || o.postSnapshot !== undefined
        ? 60 * 60_000
        : undefined;
  if (appFrequency !== undefined && appFrequency < 1000)
    throw new SrError(ErrorCode.BAD_OPTION, '--app-consistent-frequency must be at least 1s');
  if (appFrequency !== undefined && cacheStore === undefined)
    throw new SrError(ErrorCode.BAD_OPTION, 'app-consistent points need replication: add --cache-store URL');
  if (o.maxBandwidth > 0 && cacheStore === undefined)
    throw new SrError(ErrorCode.BAD_OPTION, '--max-bandwidth limits replication: add --cache-store URL');
  const appConsistent =
    appFrequency !== undefined
      ? {
          frequencyMs: appFrequency,
          ...(o.preSnapshot !== undefined ? { preSnapshot: o.preSnapshot } : {}),
          ...(o.postSnapshot !== undefined ? { postSnapshot: o.postSnapshot } : {}),
        }
      : undefined;
  const group = groupFromOptions(vm, o, cacheStore !== undefined);
  const sumsWaitMs = parseDuration(o.sumsWait, '--sums-wait');
  if (o.nbdAllowRemote === true && !isLoopbackHost(nbd.host))
    log.warn({ nbd: `${nbd.host}:${nbd.port}` }, `NBD listens off loopback (--nbd-allow-remote): ${NBD_RISK}`);
  const agent = await Agent.start({
    vm,
    disks,
    nbdHost: nbd.host,
    nbdPort: nbd.port,
    dataDir,
    journal: { ...journal, directWriteMinBytes: o.journalDirectWrites },
    checkpointIntervalMs: o.checkpointInterval,
    nbdLimits: { maxConnections: o.maxNbdConnections },
    health: { disconnectedMs },
    log,
    ...(group !== undefined ? { group } : {}),
    ...(link !== undefined
      ? {
          replication: {
            ...link,
            resync: o.resync === true,
            ...(o.maxBandwidth > 0 ? { shipper: { maxBytesPerSecond: o.maxBandwidth } } : {}),
            sums: { waitMs: sumsWaitMs },
            ...(appConsistent !== undefined ? { appConsistent } : {}),
          },
        }
      : {}),
  });
  await announce(agent, statusAddr, log);
}

/** Serves the status, stops on signals, and prints the ready line. */
async function announce(
  agent: StatusSource & { close(): Promise<void> },
  statusAddr: { host: string; port: number } | undefined,
  log: Logger,
): Promise<void> {
  const status = statusAddr !== undefined ? await serveStatus(statusAddr, agent, log) : undefined;
  // Handlers first: a supervisor may send SIGTERM the moment it reads the ready line.
  stopOnSignals(log, () => Promise.all([agent.close(), status?.close()]));
  process.stdout.write(
    JSON.stringify({ event: 'ready', ...agent.status(), ...(status ? { status: status.listen } : {}) }) + '\n',
  );
}

runCli('sr-agent', main);
