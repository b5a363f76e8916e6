import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { SYSTEM_PATH } from './process.js';

// A VM stand-in whose every write can be checked later: one synchronous 4 KiB write at a time through a
// real NBD client (nbdsh), block b ← the 8-byte big-endian sequence number s repeated, logged as
// "W s b" *before* it is sent. Any disk image is then checkable against the log: it must be the state
// after some prefix of the writes (DESIGN.md invariant 1 and 3). After nbd-server-notes.md §10.7.

export const BLOCK = 4096;

const SCRIPT = String.raw`
import os, random, time
log = open(os.environ['W_LOG'], 'w', buffering=1)
stop = os.environ['W_STOP']
blocks = int(os.environ['W_BLOCKS'])
flush_every = int(os.environ['W_FLUSH_EVERY'])
pause = 1.0 / float(os.environ['W_RATE']) if float(os.environ['W_RATE']) > 0 else 0
rng = random.Random(int(os.environ['W_SEED']))
s = 0
next_at = time.monotonic()
while not os.path.exists(stop):
    s += 1
    b = rng.randrange(blocks)
    log.write(f"W {s} {b}\n")
    h.pwrite(s.to_bytes(8, 'big') * 512, b * 4096)
    if s % flush_every == 0:
        h.flush()
        log.write(f"F {s}\n")
    if pause:
        next_at += pause
        delay = next_at - time.monotonic()
        if delay > 0: time.sleep(delay)
        else: next_at = time.monotonic()
h.flush()
log.write(f"F {s}\nE {s}\n")
`;

export interface WriterLog {
  /** `blockOf[s - 1]` is the block sequence number `s` was written to. */
  readonly blockOf: number[];
  /** Highest sequence number known flushed. */
  readonly flushed: number;
  /** Last sequence number, when the writer stopped cleanly. */
  readonly ended: number | undefined;
}

export interface BlockWriter {
  readonly logFile: string;
  /** What the writer has logged so far (the last write may be in flight). */
  log(): Promise<WriterLog>;
  /** Asks the writer to stop after its current write, waits for it to flush and exit; returns the full log. */
  stop(): Promise<WriterLog>;
}

export interface BlockWriterOptions {
  /** nbd:// URI of the export. */
  readonly uri: string;
  /** Where the script, log and stop file go. */
  readonly dir: string;
  /** Writes land in blocks [0, blocks) of 4 KiB. */
  readonly blocks: number;
  /** Writes per second; 0 is as fast as the round trips allow. Default 400. */
  readonly rate?: number;
  readonly flushEvery?: number;
  readonly seed?: number;
}

/** Starts the writer; resolves once it has logged its first write. */
export async function startBlockWriter(o: BlockWriterOptions): Promise<BlockWriter> {
  const name = `writer-${process.pid}-${Date.now()}`;
  const script = path.join(o.dir, `${name}.py`);
  const logFile = path.join(o.dir, `${name}.log`);
  const stopFile = path.join(o.dir, `${name}.stop`);
  await fsp.writeFile(script, SCRIPT);
  const child = spawn('nbdsh', ['-u', o.uri, '-c', `exec(open(${JSON.stringify(script)}).read())`], {
    env: {
      ...process.env,
      PATH: SYSTEM_PATH,
      W_LOG: logFile,
      W_STOP: stopFile,
      W_BLOCKS: String(o.blocks),
      W_FLUSH_EVERY: String(o.flushEvery ?? 100),
      W_RATE: String(o.rate ?? 400),
      W_SEED: String(o.seed ?? 1),
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const read = async (): Promise<WriterLog> => parseWriterLog(await fsp.readFile(logFile, 'utf8').catch(() => ''));
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`the nbdsh writer exited ${child.exitCode}: ${stderr.slice(-2000)}`);
    if ((await read()).blockOf.length > 0) break;
    if (i > 300) throw new Error(`the nbdsh writer logged nothing in 30 s: ${stderr.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    logFile,
    log: read,
    stop: async () => {
      await fsp.writeFile(stopFile, '');
      const code = await exited;
      if (code !== 0) throw new Error(`the nbdsh writer exited ${code}: ${stderr.slice(-2000)}`);
      const log = await read();
      if (log.ended === undefined) throw new Error('the writer log has no end line');
      return log;
    },
  };
}

/** Parses a writer log; a torn last line (a write being logged) is ignored. */
export function parseWriterLog(text: string): WriterLog {
  const blockOf: number[] = [];
  let flushed = 0;
  let ended: number | undefined;
  for (const line of text.split('\n')) {
    const m = /^([WFE]) (\d+)(?: (\d+))?$/.exec(line);
    if (m === null) continue;
    const s = Number(m[2]);
    if (m[1] === 'W' && m[3] !== undefined) {
      if (s !== blockOf.length + 1) throw new Error(`writer log: W ${s} after W ${blockOf.length}`);
      blockOf.push(Number(m[3]));
    } else if (m[1] === 'F') flushed = s;
    else if (m[1] === 'E') ended = s;
  }
  return { blockOf, flushed, ended };
}

/**
 * Checks that the first `blocks` blocks of `image` are exactly the writer's state after some prefix of
 * its log, and that the rest of the image is zero; returns that prefix (0 for an untouched disk). The
 * image must have started all zero. Throws with the first difference otherwise.
 */
export async function writerPrefixOf(image: string, log: WriterLog, blocks: number): Promise<number> {
  const data = await fsp.readFile(image);
  if (data.length < blocks * BLOCK) throw new Error(`${image}: ${data.length} bytes, smaller than ${blocks} blocks`);
  const got = new Array<number>(blocks).fill(0);
  let prefix = 0;
  for (let b = 0; b < blocks; b++) {
    const d = data.subarray(b * BLOCK, (b + 1) * BLOCK);
    const seq = Number(d.readBigUInt64BE(0));
    for (let i = 8; i < BLOCK; i += 8) {
      if (d.compare(d, 0, 8, i, i + 8) !== 0)
        throw new Error(`${image}: block ${b} is torn (not one whole 8-byte pattern)`);
    }
    if (seq !== 0 && log.blockOf[seq - 1] !== b) {
      throw new Error(
        `${image}: block ${b} holds write ${seq}, which the writer ${seq > log.blockOf.length ? 'never logged' : `sent to block ${log.blockOf[seq - 1]}`}`,
      );
    }
    got[b] = seq;
    prefix = Math.max(prefix, seq);
  }
  const expected = new Array<number>(blocks).fill(0);
  for (let s = 1; s <= prefix; s++) expected[log.blockOf[s - 1]!] = s;
  for (let b = 0; b < blocks; b++) {
    if (got[b] !== expected[b]) {
      throw new Error(
        `${image}: not the state after writes 1..${prefix}: block ${b} holds write ${got[b]}, expected ${expected[b]}`,
      );
    }
  }
  const tail = data.subarray(blocks * BLOCK);
  const nonZero = tail.findIndex((x) => x !== 0);
  if (nonZero >= 0) throw new Error(`${image}: byte ${blocks * BLOCK + nonZero}, past the written blocks, is not zero`);
  return prefix;
}
