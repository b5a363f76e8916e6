import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { SYSTEM_PATH } from './process.js';

// An application spread over several VMs, whose every write depends on the one before: one real NBD
// client (nbdsh, libnbd) holds a connection to each VM's disk and writes one 4 KiB block at a time,
// each on a VM other than the previous write's, only after the previous write was answered. Write s
// names its cause, write s-1 (on another VM). So any cut of the VMs that keeps a write must keep its
// cause: the writes a set of disks holds, across all of them, must be exactly 1..k for some k
// (DESIGN.md, multi-VM consistency). Each VM's disk fills its slots in order, block 0 first.

export const CAUSAL_BLOCK = 4096;
const MAGIC = 'SRCAUSAL';

const SCRIPT = String.raw`
import os, random, time, nbd
uris = os.environ['C_URIS'].split(',')
hs = []
for u in uris:
    h = nbd.NBD()
    h.connect_uri(u)
    hs.append(h)
slots = int(os.environ['C_SLOTS'])
stop = os.environ['C_STOP']
pause = 1.0 / float(os.environ['C_RATE']) if float(os.environ['C_RATE']) > 0 else 0
rng = random.Random(int(os.environ['C_SEED']))
log = open(os.environ['C_LOG'], 'w', buffering=1)
used = [0] * len(hs)
prev = -1
s = 0
next_at = time.monotonic()
while not os.path.exists(stop):
    v = rng.randrange(len(hs) - 1)
    if prev >= 0 and v >= prev: v += 1
    if prev < 0: v = rng.randrange(len(hs))
    if used[v] >= slots: break
    slot = used[v]
    s += 1
    head = b'SRCAUSAL' + s.to_bytes(8, 'big') + v.to_bytes(4, 'big') + slot.to_bytes(4, 'big') + (prev + 1).to_bytes(4, 'big')
    hs[v].pwrite(head + bytes(4096 - len(head)), slot * 4096)
    used[v] += 1
    prev = v
    log.write(f"W {s}\n")
    if pause:
        next_at += pause
        delay = next_at - time.monotonic()
        if delay > 0: time.sleep(delay)
        else: next_at = time.monotonic()
for h in hs: h.flush()
log.write(f"E {s}\n")
`;

export interface CausalWriter {
  /** Writes answered so far (from the writer's log). */
  written(): Promise<number>;
  /** Stops after the current write, flushes every disk, waits for exit; resolves to the number of writes. */
  stop(): Promise<number>;
  /** Whether the writer process is still running. */
  running(): boolean;
}

export interface CausalWriterOptions {
  /** nbd:// URI of one disk per VM; the VM's index in this list is what the blocks record. */
  readonly uris: readonly string[];
  readonly dir: string;
  /** Blocks of each disk the writer may use (it stops when a VM's are used up). */
  readonly slots: number;
  /** Writes per second; 0 as fast as the round trips allow. Default 300. */
  readonly rate?: number;
  readonly seed?: number;
}

/** Starts the writer; resolves once it has answered its first write. */
export async function startCausalWriter(o: CausalWriterOptions): Promise<CausalWriter> {
  if (o.uris.length < 2) throw new Error('a causal writer needs at least two VMs');
  const name = `causal-${process.pid}-${Date.now()}`;
  const script = path.join(o.dir, `${name}.py`);
  const logFile = path.join(o.dir, `${name}.log`);
  const stopFile = path.join(o.dir, `${name}.stop`);
  await fsp.writeFile(script, SCRIPT);
  const child = spawn('nbdsh', ['-c', `exec(open(${JSON.stringify(script)}).read())`], {
    env: {
      ...process.env,
      PATH: SYSTEM_PATH,
      C_URIS: o.uris.join(','),
      C_SLOTS: String(o.slots),
      C_STOP: stopFile,
      C_RATE: String(o.rate ?? 300),
      C_SEED: String(o.seed ?? 1),
      C_LOG: logFile,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const lastOf = async (kind: 'W' | 'E'): Promise<number | undefined> => {
    const text = await fsp.readFile(logFile, 'utf8').catch(() => '');
    let last: number | undefined;
    for (const m of text.matchAll(new RegExp(`^${kind} (\\d+)$`, 'gm'))) last = Number(m[1]);
    return last;
  };
  const written = async (): Promise<number> => (await lastOf('W')) ?? 0;
  for (let i = 0; (await written()) === 0; i++) {
    if (child.exitCode !== null) throw new Error(`the causal writer exited ${child.exitCode}: ${stderr.slice(-2000)}`);
    if (i > 300) throw new Error(`the causal writer wrote nothing in 30 s: ${stderr.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    written,
    running: () => child.exitCode === null && child.signalCode === null,
    stop: async () => {
      await fsp.writeFile(stopFile, '');
      const code = await exited;
      if (code !== 0) throw new Error(`the causal writer exited ${code}: ${stderr.slice(-2000)}`);
      const end = await lastOf('E');
      if (end === undefined) throw new Error('the causal writer log has no end line');
      return end;
    },
  };
}

/**
 * Checks a cut of the VMs (`images[i]` is VM i's disk, as the writer numbered them): every block is
 * either zero or a whole write of this writer that sits where it was sent, each VM's blocks are filled
 * from block 0 with no hole, and the writes held across all disks are exactly 1..k. Returns k; throws
 * naming the first write whose cause is missing otherwise.
 */
export async function causalCutOf(images: readonly string[], slots: number): Promise<number> {
  const seen = new Map<number, string>();
  for (const [vm, image] of images.entries()) {
    const data = await fsp.readFile(image);
    let ended = false;
    for (let slot = 0; slot < slots; slot++) {
      const b = data.subarray(slot * CAUSAL_BLOCK, (slot + 1) * CAUSAL_BLOCK);
      if (b.every((x) => x === 0)) {
        ended = true;
        continue;
      }
      const where = `VM ${vm} (${image}) block ${slot}`;
      if (ended) throw new Error(`${where} holds a write after an empty block: the VM's own writes have a hole`);
      if (b.toString('latin1', 0, 8) !== MAGIC) throw new Error(`${where} is not a whole write of the writer`);
      const s = Number(b.readBigUInt64BE(8));
      if (b.readUInt32BE(16) !== vm || b.readUInt32BE(20) !== slot)
        throw new Error(
          `${where} holds write ${s}, which was sent to VM ${b.readUInt32BE(16)} block ${b.readUInt32BE(20)}`,
        );
      if (seen.has(s)) throw new Error(`write ${s} is on ${seen.get(s)} and on ${where}`);
      seen.set(s, where);
    }
  }
  const k = seen.size;
  for (let s = 1; s <= k; s++) {
    if (!seen.has(s)) {
      const effect = [...seen.keys()].filter((x) => x > s).sort((x, y) => x - y)[0];
      throw new Error(
        `the cut holds ${k} writes but not write ${s}, the cause of write ${s + 1}${effect !== undefined ? ` (held on ${seen.get(effect)})` : ''}`,
      );
    }
  }
  return k;
}
