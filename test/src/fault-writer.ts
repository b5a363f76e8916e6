import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { BLOCK, parseWriterLog, type WriterLog } from './block-writer.js';
import { SYSTEM_PATH } from './process.js';
import { waitUntil } from './wait-until.js';

// The block writer of block-writer.ts (block b ← its sequence number s repeated, "W s b" logged before the
// write is sent, "F s" after a FLUSH is acknowledged), made to outlive its NBD server: a write or FLUSH that
// fails ("X s" logged) is sent again, with the same sequence number and bytes, on a new connection to
// whatever address the URI file holds now. A VM whose agent is killed retries its I/O the same way; the
// retry keeps every disk state the state after a prefix of the log, so writerPrefixOf still applies.

const SCRIPT = String.raw`
import os, random, time, nbd
log = open(os.environ['W_LOG'], 'w', buffering=1)
stop = os.environ['W_STOP']
uri_file = os.environ['W_URI_FILE']
blocks = int(os.environ['W_BLOCKS'])
flush_every = int(os.environ['W_FLUSH_EVERY'])
pause = 1.0 / float(os.environ['W_RATE']) if float(os.environ['W_RATE']) > 0 else 0
rng = random.Random(int(os.environ['W_SEED']))
h = None
def connect():
    global h
    while h is None:
        try:
            c = nbd.NBD()
            c.connect_uri(open(uri_file).read().strip())
            h = c
        except nbd.Error:
            time.sleep(0.05)
def retried(s, op):
    global h
    while True:
        connect()
        try:
            op(h)
            return
        except nbd.Error as e:
            log.write(f"X {s} {e.errno}\n")
            h = None
s = 0
next_at = time.monotonic()
while not os.path.exists(stop):
    s += 1
    b = rng.randrange(blocks)
    log.write(f"W {s} {b}\n")
    data = s.to_bytes(8, 'big') * 512
    retried(s, lambda c: c.pwrite(data, b * 4096))
    if s % flush_every == 0:
        retried(s, lambda c: c.flush())
        log.write(f"F {s}\n")
    if pause:
        next_at += pause
        delay = next_at - time.monotonic()
        if delay > 0: time.sleep(delay)
        else: next_at = time.monotonic()
retried(s, lambda c: c.flush())
log.write(f"F {s}\nE {s}\n")
`;

export interface FaultWriterLog extends WriterLog {
  /** Sequence numbers whose write or FLUSH failed and was sent again (one entry per failure). */
  readonly failed: number[];
}

export interface FaultWriter {
  readonly logFile: string;
  /** What the writer has logged so far (the last write may be in flight). */
  log(): Promise<FaultWriterLog>;
  /** Points the writer's next connection at another export (an agent restarted on a new port). */
  retarget(uri: string): Promise<void>;
  /** Asks the writer to stop after its current write, waits for its final FLUSH and exit; returns the log. */
  stop(timeoutMs?: number): Promise<FaultWriterLog>;
  /** SIGKILL, for a round that failed. */
  kill(): void;
}

export interface FaultWriterOptions {
  /** nbd:// URI of the export. */
  readonly uri: string;
  /** Where the script, log, URI file and stop file go. */
  readonly dir: string;
  /** Writes land in blocks [0, blocks) of 4 KiB. */
  readonly blocks: number;
  /** Writes per second; 0 is as fast as the round trips allow. */
  readonly rate: number;
  /** A FLUSH after every this many writes. */
  readonly flushEvery: number;
  /** Seeds the writer's choice of blocks. */
  readonly seed: number;
}

/** Starts the writer; resolves once it has logged its first write. */
export async function startFaultWriter(o: FaultWriterOptions): Promise<FaultWriter> {
  const name = `fault-writer-${process.pid}-${Date.now()}`;
  const script = path.join(o.dir, `${name}.py`);
  const logFile = path.join(o.dir, `${name}.log`);
  const stopFile = path.join(o.dir, `${name}.stop`);
  const uriFile = path.join(o.dir, `${name}.uri`);
  await fsp.writeFile(script, SCRIPT);
  await fsp.writeFile(uriFile, o.uri);
  const child = spawn('nbdsh', ['-c', `exec(open(${JSON.stringify(script)}).read())`], {
    env: {
      ...process.env,
      PATH: SYSTEM_PATH,
      W_LOG: logFile,
      W_STOP: stopFile,
      W_URI_FILE: uriFile,
      W_BLOCKS: String(o.blocks),
      W_FLUSH_EVERY: String(o.flushEvery),
      W_RATE: String(o.rate),
      W_SEED: String(o.seed),
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const read = async (): Promise<FaultWriterLog> =>
    parseFaultWriterLog(await fsp.readFile(logFile, 'utf8').catch(() => ''));
  await waitUntil(
    'the NBD writer to log its first write',
    async () => {
      if (child.exitCode !== null) throw new Error(`the nbdsh writer exited ${child.exitCode}: ${stderr}`);
      return (await read()).blockOf.length > 0 ? true : undefined;
    },
    30_000,
    50,
  ).catch((err: Error) => {
    child.kill('SIGKILL');
    throw new Error(`${err.message}; writer stderr: ${stderr}`);
  });
  return {
    logFile,
    log: read,
    retarget: (uri) => fsp.writeFile(uriFile, uri),
    stop: async (timeoutMs = 60_000) => {
      await fsp.writeFile(stopFile, '');
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([
        exited,
        new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs))),
      ]);
      clearTimeout(timer);
      if (code === 'timeout') {
        child.kill('SIGKILL');
        throw new Error(`the writer's final write and FLUSH did not complete within ${timeoutMs} ms: ${stderr}`);
      }
      if (code !== 0) throw new Error(`the nbdsh writer exited ${code}: ${stderr}`);
      const log = await read();
      if (log.ended === undefined) throw new Error('the writer log has no end line');
      return log;
    },
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/** {@link parseWriterLog}, plus the writer's failures ("X s errno" lines; errno is a name such as ENOTCONN). */
export function parseFaultWriterLog(text: string): FaultWriterLog {
  const failed = [...text.matchAll(/^X (\d+)\b.*$/gm)].map((m) => Number(m[1]));
  return { ...parseWriterLog(text), failed };
}

/**
 * Checks that every write acknowledged before the FLUSH of `flushed` acknowledged is in `image`: each of the
 * first `blocks` blocks holds the last write the log sent it up to `flushed`, or a later write to the same
 * block (writes go on after the FLUSH). Returns the problems, empty when none.
 */
export async function lostFlushedWrites(
  image: string,
  log: WriterLog,
  flushed: number,
  blocks: number,
): Promise<string[]> {
  const expected = new Array<number>(blocks).fill(0);
  for (let s = 1; s <= flushed; s++) expected[log.blockOf[s - 1]!] = s;
  const data = await fsp.readFile(image);
  const bad: string[] = [];
  for (let b = 0; b < blocks && bad.length < 5; b++) {
    const seq = Number(data.readBigUInt64BE(b * BLOCK));
    const sameBlock = seq === 0 || log.blockOf[seq - 1] === b;
    if (seq < expected[b]! || !sameBlock) {
      bad.push(
        `block ${b} holds write ${seq}; write ${expected[b]}, acknowledged before the FLUSH of ${flushed}, is lost`,
      );
    }
  }
  return bad;
}
