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
  TokenVerifier,
  checkInsecureListen,
  createLogger,
  formatSize,
  intOption,
  parseHostPort,
  readSecretFile,
  readTlsServerFiles,
  runCli,
  sizeOption,
  stopOnSignals,
} from '@site-recovery/shared';
import { DEFAULT_READ_CHUNK_BYTES, DEFAULT_SEGMENT_BYTES } from '../log/file-stream-log.js';
import { FileStreamStore } from '../log/file-stream-store.js';
import { CacheStoreServer } from '../net/server.js';
import { DEFAULT_CACHE_STORE_LIMITS as D } from '../net/server-options.js';

const sizeOpt = (flag: string, what: string, def: number, min: number): Option =>
  new Option(flag, `${what} (at least ${formatSize(min)})`)
    .default(def, formatSize(def))
    .argParser(sizeOption(flag.split(' ')[0]!, min));
const numOpt = (flag: string, what: string, def: number, min: number): Option =>
  new Option(flag, what).default(def, String(def)).argParser(intOption(flag.split(' ')[0]!, min));

const program = new Command('sr-cache-store')
  .description(
    'Accept record streams from sr-agent, make them durable (fsync) before acknowledging them, and serve them to ' +
      'sr-processor from any LSN; records the processor confirms as applied are deleted. Agents and processors ' +
      'connect over WebSocket to ws://HOST:PORT/ (wss:// with --tls-cert), each with its token: an agent token ' +
      'streams only its VM, a processor token reads and acknowledges. GET /health answers {ok} to anyone (200 when ' +
      'storage takes writes and every VM log takes appends, else 503); GET /status and GET /health/details (the ' +
      'problems) need a processor token.',
  )
  .option('--listen <host:port>', 'address to listen on; port 0 picks a free port', '127.0.0.1:7400')
  .option('--data-dir <dir>', 'where the streams are kept: <dir>/vms/<vm>/ (meta.json and segment files)')
  .option(
    '--auth-secret-file <file>',
    'the secret (a file only its owner may read; create it with "sr secret new --out FILE") that signs and checks ' +
      'agent and processor tokens ("sr token issue --secret-file FILE --vm NAME | --role processor")',
  )
  .option(
    '--revoked-tokens-file <file>',
    'token ids refused even before they expire, one per line (# comments); read again within a second of a change',
  )
  .option('--tls-cert <file>', 'serve only HTTPS/WSS with this PEM certificate (chain); plaintext is refused')
  .option('--tls-key <file>', 'the PEM private key of --tls-cert (a file only its owner may read)')
  .option(
    '--insecure',
    'run without --auth-secret-file: no authentication, anyone who reaches the port may write and read every ' +
      "VM's stream; allowed only with a loopback --listen address",
    false,
  )
  .addOption(
    sizeOpt(
      '--segment-bytes <size>',
      'a segment file is closed and a new one begun at this size',
      DEFAULT_SEGMENT_BYTES,
      64 * 1024,
    ),
  )
  .addOption(
    sizeOpt(
      '--read-chunk-bytes <size>',
      'consecutive small batches are read back for the processor in reads of up to this size',
      DEFAULT_READ_CHUNK_BYTES,
      64 * 1024,
    ),
  )
  .addOption(
    sizeOpt(
      '--max-frame-bytes <size>',
      'largest WebSocket message accepted; larger ones close the connection (code 1009)',
      DEFAULT_WIRE_LIMITS.maxFrameBytes,
      64 * 1024,
    ),
  )
  .addOption(numOpt('--max-batch-records <n>', 'most records in one batch', DEFAULT_WIRE_LIMITS.maxBatchRecords, 1))
  .addOption(
    sizeOpt(
      '--max-batch-raw-bytes <size>',
      'largest uncompressed payload of one batch',
      DEFAULT_WIRE_LIMITS.maxBatchRawBytes,
      1,
    ),
  )
  .addOption(numOpt('--max-disks <n>', 'most disks a VM may declare', DEFAULT_WIRE_LIMITS.maxDisks, 1))
  .addOption(
    sizeOpt(
      '--max-buffered-bytes <size>',
      "a processor connection's send buffer above which sending pauses until it drains",
      D.maxBufferedBytes,
      64 * 1024,
    ),
  )
  .addOption(
    sizeOpt(
      '--max-unsynced-bytes <size>',
      "a VM's appended-but-not-yet-durable bytes above which its agent connection stops being read",
      D.maxUnsyncedBytes,
      1024 * 1024,
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
      '--max-connections-per-source <n>',
      'open connections from one source address, counted before TLS and credentials; more are closed at once ' +
        '(every agent of a hypervisor host shares its address: raise it past the agents behind one address)',
      D.maxConnectionsPerSource,
      1,
    ),
  )
  .addOption(
    sizeOpt(
      '--max-hello-bytes <size>',
      'bytes a connection may send before its hello; past it SR_LIMIT and the connection is closed',
      D.maxHelloBytes,
      4096,
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
    '\nSizes are bytes, or a number with K, M, G or T, all binary (4M = 4MiB = 4194304 bytes; 4MB is refused as ambiguous).\n' +
      'On start it prints one JSON line {"event":"ready","listen":"HOST:PORT",...} on stdout; logs (JSON) go to stderr.\n' +
      'SIGTERM or SIGINT stop it cleanly. A VM whose stored stream is damaged is set aside (GET /status lists it under\n' +
      '"damaged", naming the file) while the other VMs go on; its agent is refused with SR_JOURNAL_CORRUPT until it\n' +
      'starts a new generation (sr-agent --resync), which replaces the damaged data.\n' +
      'Without --auth-secret-file it refuses to start (SR_BAD_OPTION), unless --insecure on a loopback address.\n' +
      'Example:\n  sr secret new --out /etc/site-recovery/cache-store.secret\n' +
      '  sr-cache-store --listen 0.0.0.0:7400 --data-dir /var/lib/site-recovery/cache \\\n' +
      '    --auth-secret-file /etc/site-recovery/cache-store.secret --tls-cert cs.crt --tls-key cs.key',
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
  maxConnectionsPerSource: number;
  maxHelloBytes: number;
  maxVms: number;
  authSecretFile?: string;
  revokedTokensFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  insecure: boolean;
}

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<Opts>();
  const listen = parseHostPort(o.listen, '--listen');
  if (o.dataDir === undefined) throw new SrError(ErrorCode.BAD_OPTION, '--data-dir DIR is required');
  // Every credential option is checked before anything is opened: a refusal leaves no trace.
  const secret = o.authSecretFile !== undefined ? readSecretFile(o.authSecretFile) : undefined;
  if (secret === undefined) {
    checkInsecureListen(listen.host, o.insecure, '--auth-secret-file');
    if (o.revokedTokensFile !== undefined)
      throw new SrError(
        ErrorCode.BAD_OPTION,
        '--revoked-tokens-file needs --auth-secret-file: without it no token is checked',
      );
  }
  const tls = readTlsServerFiles(o.tlsCert, o.tlsKey);
  const log = createLogger('sr-cache-store');
  if (secret === undefined)
    log.warn(
      { listen: o.listen },
      "authentication is OFF (--insecure): anyone who reaches this loopback port may write and read every VM's stream",
    );
  else if (o.insecure) log.warn('--insecure is ignored: --auth-secret-file is given, so authentication is on');
  const verifier =
    secret !== undefined
      ? new TokenVerifier({
          secret,
          log,
          ...(o.revokedTokensFile !== undefined ? { revokedTokensFile: o.revokedTokensFile } : {}),
        })
      : undefined;
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
    ...(verifier !== undefined ? { verifier } : {}),
    ...(tls !== undefined ? { tls } : {}),
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
      maxConnectionsPerSource: o.maxConnectionsPerSource,
      maxHelloBytes: o.maxHelloBytes,
      maxVms: o.maxVms,
    },
  });
  const status = server.status();
  // Handlers first: a supervisor may send SIGTERM the moment it reads the ready line.
  stopOnSignals(log, async () => {
    await server.close();
    verifier?.close();
    await store.close();
  });
  const ready = { listen: status.listen, dataDir: o.dataDir, authentication: status.authentication, tls: status.tls };
  process.stdout.write(JSON.stringify({ event: 'ready', ...ready, vms: status.vms.length }) + '\n');
  log.info({ ...ready, vms: status.vms.map((v) => v.vm) }, 'serving');
}

runCli('sr-cache-store', main);
