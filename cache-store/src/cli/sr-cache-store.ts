#!/usr/bin/env -S node --initial-old-space-size=64
// The flag: V8 sizes a young process's old generation for a tiny heap, and the stream's megabyte
// buffers then drove ~10 full collections a second, a third of this process's CPU (measured).
// Starting with 64 MiB of old space brings that to about one per run. Start it through this line
// (npx, node_modules/.bin, or the file itself); tools read the flags from here.
import { Command, Option } from 'commander';
import {
  DEFAULT_WIRE_LIMITS,
  ErrorCode,
  SrError,
  createLogger,
  intOption,
  parseHostPort,
  runCli,
  stopOnSignals,
} from '@site-recovery/shared';
import { DEFAULT_READ_CHUNK_BYTES, DEFAULT_SEGMENT_BYTES } from '../log/file-stream-log.js';
import { FileStreamStore } from '../log/file-stream-store.js';
import { CacheStoreServer } from '../net/server.js';
import { DEFAULT_CACHE_STORE_LIMITS as D } from '../net/server-options.js';

const MiB = 1024 * 1024;
const sizeOpt = (flag: string, what: string, def: number, min: number): Option =>
  new Option(flag, what)
    .default(def, def >= MiB ? `${def} = ${def / MiB} MiB` : String(def))
    .argParser(intOption(flag.split(' ')[0]!, min));
const numOpt = (flag: string, what: string, def: number, min: number): Option =>
  new Option(flag, what).default(def, String(def)).argParser(intOption(flag.split(' ')[0]!, min));

const program = new Command('sr-cache-store')
  .description(
    'Accept record streams from sr-agent, make them durable (fsync) before acknowledging them, and serve them to ' +
      'sr-processor from any LSN; records the processor confirms as applied are deleted. Agents and processors ' +
      'connect over WebSocket to ws://HOST:PORT/; GET /status and GET /health answer JSON (/health: 200 when ' +
      'storage takes writes and every VM log takes appends, else 503 with the problems).',
  )
  .option('--listen <host:port>', 'address to listen on; port 0 picks a free port', '127.0.0.1:7400')
  .option('--data-dir <dir>', 'where the streams are kept: <dir>/vms/<vm>/ (meta.json and segment files)')
  .addOption(
    sizeOpt(
      '--segment-bytes <n>',
      'a segment file is closed and a new one begun at this size',
      DEFAULT_SEGMENT_BYTES,
      64 * 1024,
    ),
  )
  .addOption(
    sizeOpt(
      '--read-chunk-bytes <n>',
      'consecutive small batches are read back for the processor in reads of up to this size',
      DEFAULT_READ_CHUNK_BYTES,
      64 * 1024,
    ),
  )
  .addOption(
    sizeOpt(
      '--max-frame-bytes <n>',
      'largest WebSocket message accepted; larger ones close the connection (code 1009)',
      DEFAULT_WIRE_LIMITS.maxFrameBytes,
      64 * 1024,
    ),
  )
  .addOption(numOpt('--max-batch-records <n>', 'most records in one batch', DEFAULT_WIRE_LIMITS.maxBatchRecords, 1))
  .addOption(
    sizeOpt(
      '--max-batch-raw-bytes <n>',
      'largest uncompressed payload of one batch',
      DEFAULT_WIRE_LIMITS.maxBatchRawBytes,
      1,
    ),
  )
  .addOption(numOpt('--max-disks <n>', 'most disks a VM may declare', DEFAULT_WIRE_LIMITS.maxDisks, 1))
  .addOption(
    sizeOpt(
      '--max-buffered-bytes <n>',
      "a processor connection's send buffer above which sending pauses until it drains",
      D.maxBufferedBytes,
      64 * 1024,
    ),
  )
  .addOption(
    sizeOpt(
      '--max-unsynced-bytes <n>',
      "a VM's appended-but-not-yet-durable bytes above which its agent connection stops being read",
      D.maxUnsyncedBytes,
      MiB,
    ),
  )
  .addOption(
    numOpt(
      '--hello-timeout-ms <n>',
      'a connection that sends no hello within this time is closed',
      D.helloTimeoutMs,
      1,
    ),
  )
  .addOption(
    numOpt(
      '--ping-interval-ms <n>',
      'ping every connection this often and drop it when a ping goes unanswered; 0 never',
      D.pingIntervalMs,
      0,
    ),
  )
  .addOption(
    numOpt(
      '--max-connections <n>',
      'open connections at most; more are closed at once with 1013 (try again later)',
      D.maxConnections,
      1,
    ),
  )
  .addOption(
    numOpt(
      '--max-vms <n>',
      'VMs tracked at once (stored streams plus VMs a connection names without one); a new VM past it is ' +
        'refused with SR_LIMIT and nothing is stored for it',
      D.maxVms,
      1,
    ),
  )
  .addHelpText(
    'after',
    '\nOn start it prints one JSON line {"event":"ready","listen":"HOST:PORT",...} on stdout; logs (JSON) go to stderr.\n' +
      'SIGTERM or SIGINT stop it cleanly. A VM whose stored stream is damaged is set aside (GET /status lists it under\n' +
      '"damaged", naming the file) while the other VMs go on; its agent is refused with SR_JOURNAL_CORRUPT until it\n' +
      'starts a new generation (sr-agent --resync), which replaces the damaged data.\n' +
      'Example:\n  sr-cache-store --listen 0.0.0.0:7400 --data-dir /var/lib/site-recovery/cache',
  );

interface Opts {
  listen: string;
  dataDir?: string;
  segmentBytes: number;
  readChunkBytes: number;
  maxFrameBytes: number;
  maxBatchRecords: number;
  maxBatchRawBytes: number;
  maxDisks: number;
  maxBufferedBytes: number;
  maxUnsyncedBytes: number;
  helloTimeoutMs: number;
  pingIntervalMs: number;
  maxConnections: number;
  maxVms: number;
}

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<Opts>();
  const listen = parseHostPort(o.listen, '--listen');
  if (o.dataDir === undefined) throw new SrError(ErrorCode.BAD_OPTION, '--data-dir DIR is required');
  const log = createLogger('sr-cache-store');
  const store = await FileStreamStore.open(o.dataDir, {
    segmentBytes: o.segmentBytes,
    maxFrameBytes: o.maxFrameBytes,
    readChunkBytes: o.readChunkBytes,
    log,
  });
  const server = await CacheStoreServer.start({
    store,
    log,
    host: listen.host,
    port: listen.port,
    limits: {
      maxFrameBytes: o.maxFrameBytes,
      maxBatchRecords: o.maxBatchRecords,
      maxBatchRawBytes: o.maxBatchRawBytes,
      maxDisks: o.maxDisks,
      maxBufferedBytes: o.maxBufferedBytes,
      maxUnsyncedBytes: o.maxUnsyncedBytes,
      helloTimeoutMs: o.helloTimeoutMs,
      pingIntervalMs: o.pingIntervalMs,
      maxConnections: o.maxConnections,
      maxVms: o.maxVms,
    },
  });
  const status = server.status();
  // Handlers first: a supervisor may send SIGTERM the moment it reads the ready line.
  stopOnSignals(log, () => server.close().then(() => store.close()));
  process.stdout.write(
    JSON.stringify({ event: 'ready', listen: status.listen, dataDir: o.dataDir, vms: status.vms.length }) + '\n',
  );
  log.info({ listen: status.listen, dataDir: o.dataDir, vms: status.vms.map((v) => v.vm) }, 'serving');
}

runCli('sr-cache-store', main);
