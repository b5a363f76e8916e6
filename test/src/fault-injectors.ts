import fsp from 'node:fs/promises';
import path from 'node:path';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import type { AgentStartOptions, ProtectedVm, ReplicationEnv } from './replication-env.js';
import type { FaultKind, PlannedFault } from './fault-schedule.js';
import { lostFlushedWrites, type FaultWriter } from './fault-writer.js';
import type { ThrottleProxy } from './throttle-proxy.js';
import { waitUntil } from './wait-until.js';

/** What a fault acts on: one VM whose agent reaches the cache-store through `proxy`, and the writer on it. */
export interface FaultTarget {
  readonly env: ReplicationEnv;
  readonly vm: ProtectedVm;
  readonly proxy: ThrottleProxy;
  readonly writer: FaultWriter;
  /** How the VM's agent is (re)started. */
  readonly agentOptions: AgentStartOptions;
  /** The writer's blocks, from block 0 of the VM's first disk. */
  readonly blocks: number;
  /** How long each wait of a fault may take. */
  readonly timeoutMs: number;
  /** The cache-store's data dir: a small file system of its own, which `cache-store-disk-full` fills. */
  readonly cacheStoreDir: string;
  /** Seeds a fault's own choices (which journal bytes are overwritten, with what). */
  readonly seed: number;
}

/** What a fault found at its moment, for the round's report. */
export interface FaultOutcome {
  readonly kind: FaultKind;
  /** Writes the writer had logged when the fault struck. */
  readonly atWrite: number;
  /** Writes logged while the fault held (before the faulty part was restored). */
  readonly writesDuring: number;
  /** Anything more the fault observed (records in flight, the agent's mode, ...). */
  readonly detail: string;
}

type Injector = (t: FaultTarget, f: PlannedFault, atWrite: number) => Promise<Omit<FaultOutcome, 'kind' | 'atWrite'>>;

const writes = async (t: FaultTarget): Promise<number> => (await t.writer.log()).blockOf.length;

/** Waits until the writer has logged `n` writes; `why` says what that shows. */
export function writerReaches(t: FaultTarget, n: number, why: string): Promise<number> {
  return waitUntil(
    `the writer to log write ${n} (${why})`,
    async () => {
      const c = await writes(t);
      return c >= n ? c : undefined;
    },
    t.timeoutMs,
    20,
  );
}

/**
 * kill -9 of the agent under the writer. The image is checked before the restart (nobody can write it then)
 * and after: every write acknowledged before the last acknowledged FLUSH is in it. The writer must see its
 * I/O fail (a write or FLUSH was in flight, or the next one failed) and go on against the restarted agent.
 */
async function killAgent(
  t: FaultTarget,
  f: PlannedFault,
  whileDown: () => Promise<string> = () => Promise.resolve(''),
): Promise<Omit<FaultOutcome, 'kind' | 'atWrite'>> {
  const failedBefore = (await t.writer.log()).failed.length;
  await t.vm.agent.kill();
  const atKill = await t.writer.log();
  const image = t.vm.disks[0]!.path;
  const lostAtKill = await lostFlushedWrites(image, atKill, atKill.flushed, t.blocks);
  if (lostAtKill.length > 0) throw new Error(`after kill -9 of the agent: ${lostAtKill.join('; ')}`);
  const done = await whileDown();
  await t.env.startAgentFor(t.vm, t.agentOptions);
  const lostAfter = await lostFlushedWrites(image, atKill, atKill.flushed, t.blocks);
  if (lostAfter.length > 0) throw new Error(`after the agent's restart: ${lostAfter.join('; ')}`);
  await t.writer.retarget(t.vm.agent.uri(t.vm.disks[0]!.id));
  const resumed = await waitUntil(
    `the writer to see its I/O fail at the agent's kill -9 and log ${f.holdWrites} writes on the restarted agent`,
    async () => {
      const log = await t.writer.log();
      return log.failed.length > failedBefore && log.blockOf.length >= atKill.blockOf.length + f.holdWrites
        ? log
        : undefined;
    },
    t.timeoutMs,
    20,
  );
  return {
    writesDuring: 0,
    detail: `flushed ${atKill.flushed} of ${atKill.blockOf.length} at the kill, ${resumed.failed.length - failedBefore} failed I/O retried${done}`,
  };
}

/**
 * kill -9 of the agent, bytes at the tail of its newest journal segment overwritten with random ones, and a
 * restart. The product decides what follows (the torn tail cut off, or a new generation); the round's checks
 * hold either way. The detail says which happened.
 */
const corruptJournalTail: Injector = async (t, f) => {
  const before = (await t.env.agentStatus(t.vm)).generation?.id;
  const outcome = await killAgent(t, f, async () => {
    const dir = path.join(t.vm.dataDir, 'journal');
    const newest = (await fsp.readdir(dir))
      .filter((n) => n.endsWith('.srj'))
      .sort()
      .at(-1);
    if (newest === undefined) throw new Error(`no journal segment in ${dir} to corrupt`);
    const file = path.join(dir, newest);
    const size = (await fsp.stat(file)).size;
    const rng = xoroshiro128plus(t.seed);
    // Past the segment's 32-byte header: a tail of records, not a segment that cannot be opened.
    const length = Math.min(size - 32, uniformInt(rng, 1, 64 * 1024));
    if (length <= 0) return `, ${newest} holds no record to corrupt`;
    const bytes = Buffer.alloc(length);
    for (let i = 0; i < length; i++) bytes[i] = uniformInt(rng, 0, 255);
    const fh = await fsp.open(file, 'r+');
    try {
      await fh.write(bytes, 0, length, size - length);
    } finally {
      await fh.close();
    }
    return `, last ${length} bytes of ${newest} (${size} bytes) overwritten`;
  });
  const g = (await t.env.agentStatus(t.vm)).generation;
  const after = g?.id === before ? 'same generation' : `new generation (${g?.cause ?? 'no cause'})`;
  return { ...outcome, detail: `${outcome.detail}; ${after}` };
};

/**
 * The cache-store's file system filled by a ballast file until it refuses the agent's records (`SR_NO_SPACE`),
 * with the VM writing on into its journal; then the ballast is deleted and the stream resumes by itself.
 */
const cacheStoreDiskFull: Injector = async (t, f, atWrite) => {
  const ballast = path.join(t.cacheStoreDir, '..', 'ballast');
  const fh = await fsp.open(ballast, 'w');
  const chunk = Buffer.alloc(1 << 20, 0xba);
  try {
    for (;;) await fh.write(chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    await fh.close();
  }
  const refused = await waitUntil(
    "the cache-store to refuse the agent for a full disk (SR_NO_SPACE in the agent's stream.lastError)",
    async () => {
      const s = (await t.env.agentStatus(t.vm)).replication?.stream;
      return s?.lastError?.includes('SR_NO_SPACE') === true ? s : undefined;
    },
    t.timeoutMs,
    50,
  );
  const during = await writerReaches(
    t,
    (await writes(t)) + f.holdWrites,
    'the VM writing on with the cache-store full',
  );
  await fsp.rm(ballast);
  return { writesDuring: during - atWrite, detail: `refused at acked LSN ${refused.ackedLsn}` };
};

/** kill -9 of a service; the VM's writes must go on while it is down; then it restarts on its address. */
function killService(which: 'cacheStore' | 'processor'): Injector {
  return async (t, f, atWrite) => {
    const s = (await t.env.agentStatus(t.vm)).replication?.stream;
    const inFlight = s === undefined ? 'no stream' : `${s.sentLsn - s.ackedLsn} records sent and not acknowledged`;
    const service = t.env[which];
    const listen = service.listen;
    await service.kill();
    const killedAt = await writes(t);
    const during = await writerReaches(t, killedAt + f.holdWrites, `the VM writing on with the ${which} killed`);
    if (which === 'cacheStore') await t.env.startCacheStore(listen);
    else await t.env.startProcessor(listen);
    return { writesDuring: during - atWrite, detail: inFlight };
  };
}

/**
 * The agent↔cache-store link cut until the journal passes its cap and the agent is in bitmap mode, with the
 * VM writing on (no write waits on the link), then restored.
 */
const linkCut: Injector = async (t, f, atWrite) => {
  t.proxy.partition();
  const mode = await waitUntil(
    'the agent to pass its journal cap and enter bitmap mode while the link to the cache-store is cut',
    async () => {
      const m = (await t.env.agentStatus(t.vm)).mode;
      return m?.state === 'bitmap' ? m : undefined;
    },
    t.timeoutMs,
    50,
  );
  const during = await writerReaches(t, (await writes(t)) + f.holdWrites, 'the VM writing on in bitmap mode');
  const status = await t.env.agentStatus(t.vm);
  if (status.stalledWrites !== 0) throw new Error(`${status.stalledWrites} VM writes waited on the cut link`);
  t.proxy.heal();
  return { writesDuring: during - atWrite, detail: `bitmap mode, ${mode.dirtyBytes} bytes dirty when entered` };
};

export const INJECTORS: Record<FaultKind, Injector> = {
  'kill-agent': (t, f) => killAgent(t, f),
  'journal-tail-corrupt': corruptJournalTail,
  'cache-store-disk-full': cacheStoreDiskFull,
  'kill-cache-store': killService('cacheStore'),
  'kill-processor': killService('processor'),
  'link-cut': linkCut,
};

/** Waits for the fault's moment (its count of writes past `from`), injects it and restores the faulty part. */
export async function injectFault(t: FaultTarget, f: PlannedFault, from: number): Promise<FaultOutcome> {
  const inject = INJECTORS[f.kind];
  const atWrite = await writerReaches(t, from + f.afterWrites, `the moment of ${f.kind}`);
  return { kind: f.kind, atWrite, ...(await inject(t, f, atWrite)) };
}
