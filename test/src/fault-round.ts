import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { writerPrefixOf } from './block-writer.js';
import { injectFault, type FaultOutcome, type FaultTarget } from './fault-injectors.js';
import { describePlan, sampleIndexes, type RoundPlan } from './fault-schedule.js';
import { startFaultWriter, type FaultWriter, type FaultWriterLog } from './fault-writer.js';
import { ReplicationEnv, type AgentStartOptions, type ProtectedVm } from './replication-env.js';
import { srJson, srOk, type SrManifest, type SrPoint } from './sr-cli.js';
import { ThrottleProxy } from './throttle-proxy.js';
import { tempDir } from './files.js';

export interface RoundOptions {
  readonly plan: RoundPlan;
  /** Progress lines (the seed first). Default: none. */
  readonly log?: (line: string) => void;
  /** Recovery points materialised and checked besides the newest. Default 3. */
  readonly pointSamples?: number;
  /** The writer's writes per second. Default 800 (a 4 MiB journal cap passes in a few seconds of a cut). */
  readonly writerRate?: number;
  /** How long any one wait of the round may take. Default 120 s. */
  readonly timeoutMs?: number;
}

export interface RoundResult {
  readonly seed: number;
  readonly faults: readonly FaultOutcome[];
  /** Writes the writer had acknowledged at its end (its last FLUSH covers them all). */
  readonly writes: number;
  /** I/O the writer saw fail (and sent again). */
  readonly failedIo: number;
  readonly points: number;
  readonly checkedPoints: number;
  readonly durationMs: number;
}

const VM = 'fault01';
/** 16 MiB: the writer covers the whole disk, so every byte of every replica and point is checked. */
const BLOCKS = 4096;
const FLUSH_EVERY = 64;
const AGENT_ARGS = ['--journal-max-bytes', '4M'];
/**
 * The cache-store's own file system (tmpfs) when a round fills it: room for its segments of 1 MiB while the
 * processor keeps up, small enough that the ballast file that fills it is written in a moment.
 */
const CACHE_STORE_FS = '48m';
const CACHE_STORE_ARGS = ['--segment-bytes', '1M'];

/** The message of a round's failure: the seed to replay it first. */
export function roundFailure(seed: number, err: unknown): Error {
  const message = err instanceof Error ? err.message : String(err);
  return new Error(`fault-injection round failed, replay with SEED=${seed}: ${message}`, { cause: err });
}

/**
 * One round of the fault-injection suite: a VM written through NBD by the logging writer, the plan's faults
 * injected while it writes, then, once drained: the replica byte-identical to the source, the source holding
 * every acknowledged write (so no acknowledged FLUSH is lost), and a sample of the recovery points (and the
 * newest) each the state after a prefix of the writer's log, in order. Throws {@link roundFailure}.
 */
export async function runFaultRound(o: RoundOptions): Promise<RoundResult> {
  const started = Date.now();
  const say = o.log ?? (() => undefined);
  say(`round ${describePlan(o.plan)}`);
  let env: ReplicationEnv | undefined;
  let proxy: ThrottleProxy | undefined;
  let writer: FaultWriter | undefined;
  let mount: { dir: string; cleanup: () => Promise<void>; mounted: boolean } | undefined;
  try {
    let cacheStoreDir: string | undefined;
    if (o.plan.faults.some((f) => f.kind === 'cache-store-disk-full')) {
      mount = { ...(await tempDir(`fault-cs-${o.plan.seed}`)), mounted: false };
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${CACHE_STORE_FS}`, 'tmpfs', mount.dir]);
      } catch (err) {
        throw new Error(`cache-store-disk-full needs a tmpfs (mount, as root): ${(err as Error).message}`);
      }
      mount.mounted = true;
      cacheStoreDir = path.join(mount.dir, 'cache-store');
    }
    env = await ReplicationEnv.start(`fault-${o.plan.seed}`, {
      cacheStore: { ...(cacheStoreDir !== undefined ? { dataDir: cacheStoreDir } : {}), args: CACHE_STORE_ARGS },
    });
    const [host, port] = env.cacheStore.listen.split(/:(?=\d+$)/) as [string, string];
    proxy = new ThrottleProxy(host, Number(port), { bytesPerSecond: Infinity, delayMs: 0 });
    await proxy.listen();
    const agentOptions: AgentStartOptions = { cacheStoreUrl: `ws://127.0.0.1:${proxy.port}`, args: AGENT_ARGS };
    const vm = await env.protect(VM, [{ id: 'os', size: BLOCKS * 4096 }], agentOptions);
    await env.drained(vm);
    await srOk(env.processor, ['configure', VM, '--crash-consistent-frequency', '1s', '--retention', '1h']);
    writer = await startFaultWriter({
      uri: vm.agent.uri('os'),
      dir: env.dir,
      blocks: BLOCKS,
      rate: o.writerRate ?? 800,
      flushEvery: FLUSH_EVERY,
      seed: o.plan.writerSeed,
    });
    const timeoutMs = o.timeoutMs ?? 120_000;
    const outcomes: FaultOutcome[] = [];
    let from = 0;
    for (const f of o.plan.faults) {
      const target: FaultTarget = {
        ...{ env, vm, proxy, writer, agentOptions, blocks: BLOCKS, timeoutMs },
        cacheStoreDir: cacheStoreDir ?? path.join(env.dir, 'cache-store'),
        seed: f.seed,
      };
      const outcome = await injectFault(target, f, from);
      say(`  ${f.kind} at write ${outcome.atWrite}: ${outcome.detail}`);
      outcomes.push(outcome);
      from = (await writer.log()).blockOf.length;
    }
    const log = await writer.stop(timeoutMs);
    writer = undefined;
    const checked = await checkConverged(env, vm, log, timeoutMs, o.plan.sampleSeed, o.pointSamples ?? 3);
    const result: RoundResult = {
      seed: o.plan.seed,
      faults: outcomes,
      writes: log.ended!,
      failedIo: log.failed.length,
      ...checked,
      durationMs: Date.now() - started,
    };
    say(
      `  ok: ${result.writes} writes, ${result.failedIo} failed I/O retried, ${result.checkedPoints} of ${result.points} points checked, ${result.durationMs} ms`,
    );
    return result;
  } catch (err) {
    throw roundFailure(o.plan.seed, err);
  } finally {
    writer?.kill();
    await proxy?.close().catch(() => undefined);
    await env?.close().catch(() => undefined);
    if (mount?.mounted === true) execFileSync('umount', ['-l', mount.dir]);
    await mount?.cleanup();
  }
}

/** The checks once the round's writer has stopped; see {@link runFaultRound}. */
async function checkConverged(
  env: ReplicationEnv,
  vm: ProtectedVm,
  log: FaultWriterLog,
  timeoutMs: number,
  sampleSeed: number,
  samples: number,
): Promise<{ points: number; checkedPoints: number }> {
  await env.drained(vm, timeoutMs);
  const mismatches = await env.compare(vm);
  if (mismatches.length > 0) throw new Error(`replica differs from its source: ${mismatches.join('; ')}`);
  // The writer's last FLUSH covered its every write: the source (and so the replica) must hold all of them.
  const source = await writerPrefixOf(vm.disks[0]!.path, log, BLOCKS);
  if (source !== log.ended) {
    throw new Error(`the source holds writes 1..${source} of ${log.ended}, all acknowledged and flushed`);
  }
  // Freeze the catalog (no new point, no pruning) so that what is listed stays there to be checked.
  await srOk(env.processor, ['configure', VM, '--crash-consistent-frequency', '1h', '--retention', '1h']);
  const points = await srJson<SrPoint[]>(env.processor, ['points', VM]);
  const chosen = new Set(sampleIndexes(sampleSeed, Math.max(0, points.length - 1), samples));
  if (points.length > 0) chosen.add(points.length - 1);
  let previous = { id: '', prefix: 0 };
  for (const i of [...chosen].sort((a, b) => a - b)) {
    const point = points[i]!;
    const m = await srJson<SrManifest>(env.processor, ['test-failover', VM, '--point', point.id, '--network', 'n']);
    try {
      const prefix = await writerPrefixOf(m.disks[0]!.path, log, BLOCKS).catch((err: Error) => {
        throw new Error(`point ${point.id} (LSN ${point.lsn}) is not a prefix of the writer's log: ${err.message}`);
      });
      if (prefix < previous.prefix) {
        throw new Error(
          `point ${point.id} holds writes 1..${prefix}, fewer than the older point ${previous.id} (1..${previous.prefix})`,
        );
      }
      previous = { id: point.id, prefix };
    } finally {
      await srOk(env.processor, ['test-failover-cleanup', VM]);
    }
  }
  return { points: points.length, checkedPoints: chosen.size };
}
