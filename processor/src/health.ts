import type { PauseInfo } from './stream/apply-pause.js';
import type { ErrorInfo, VmTrouble } from './stream/vm-status.js';

/**
 * Why `GET /health` answers 503. Stable: monitoring matches on them.
 */
export const HealthProblemCode = {
  /** No connection to the cache-store has got as far as the VM list for longer than the threshold. */
  CACHE_STORE_UNREACHABLE: 'SR_CACHE_STORE_UNREACHABLE',
  /** A VM's stream is refused or cannot be applied (a bad batch, a sequence gap): its replica stands still. */
  APPLY_FAILING: 'SR_APPLY_FAILING',
  /** A VM's replica cannot be opened or made durable (disk full, I/O error, a damaged state file). */
  REPLICA_STORE_FAILING: 'SR_REPLICA_STORE_FAILING',
  /**
   * A VM's replica or undo logs cannot grow: the data dir's filesystem is full (or over quota).
   * Applying is paused, every point kept, and the processor retries by itself.
   */
  REPLICA_DISK_FULL: 'SR_REPLICA_DISK_FULL',
  /**
   * The source started a generation the processor does not take (too many older disk layouts kept,
   * SR_TOO_MANY_REPLICAS; a disk over the size limit, SR_LIMIT): its stream is not applied, every
   * point is kept.
   */
  GENERATION_REFUSED: 'SR_GENERATION_REFUSED',
  /** A VM's recovery points cannot be cut or pruned. */
  POINT_STORE_FAILING: 'SR_POINT_STORE_FAILING',
} as const;

export type HealthProblemCode = (typeof HealthProblemCode)[keyof typeof HealthProblemCode];

export interface HealthProblem {
  readonly code: HealthProblemCode;
  readonly message: string;
  readonly vm?: string;
}

export interface HealthReport {
  readonly ok: boolean;
  readonly problems: HealthProblem[];
  readonly cacheStore: { readonly connected: boolean };
  readonly vms: number;
  readonly vmsInError: number;
}

/** What the processor knows when it is asked. */
export interface HealthFacts {
  readonly now: number;
  readonly cacheStoreUrl: string;
  readonly cacheStoreConnected: boolean;
  /** Since when no connection to the cache-store has got as far as the VM list, if one has not. */
  readonly cacheStoreUnreachableSince: number | undefined;
  readonly cacheStoreUnreachableMs: number;
  readonly vms: readonly { readonly vm: string; readonly trouble: VmTrouble | undefined }[];
  /** VMs whose recovery points failed on the scheduler's last pass. */
  readonly pointFailures: ReadonlyMap<string, ErrorInfo>;
}

/** How long the cache-store may be out of reach before `/health` reports it. */
export const DEFAULT_CACHE_STORE_UNREACHABLE_MS = 60_000;

/**
 * Turns the processor's state into the `/health` answer: a VM that cannot be replicated or protected
 * is a problem at once; the cache-store only after it has been out of reach for the threshold, since
 * reconnecting after a blip is routine (and with the source region gone, the processor still serves
 * failover: the problem says what is wrong, not that the processor is useless).
 */
export function assessHealth(f: HealthFacts): HealthReport {
  const problems: HealthProblem[] = [];
  const since = f.cacheStoreUnreachableSince;
  if (since !== undefined && f.now - since >= f.cacheStoreUnreachableMs) {
    problems.push({
      code: HealthProblemCode.CACHE_STORE_UNREACHABLE,
      message: `the cache-store at ${f.cacheStoreUrl} has been out of reach for ${Math.round((f.now - since) / 1000)} s (since ${new Date(since).toISOString()}); check that it runs and that this host can reach it`,
    });
  }
  let vmsInError = 0;
  for (const { vm, trouble } of f.vms) {
    if (trouble === undefined) continue;
    vmsInError++;
    problems.push({ ...describeTrouble(vm, trouble), vm });
  }
  for (const [vm, e] of f.pointFailures) {
    problems.push({
      code: HealthProblemCode.POINT_STORE_FAILING,
      message: `recovery points of ${vm} cannot be cut or pruned (${e.code}: ${e.message}); check the data dir's disk`,
      vm,
    });
  }
  return {
    ok: problems.length === 0,
    problems,
    cacheStore: { connected: f.cacheStoreConnected },
    vms: f.vms.length,
    vmsInError,
  };
}

function describeTrouble(vm: string, t: VmTrouble): { code: HealthProblemCode; message: string } {
  const { code, message } = t.error;
  const retry = (t.error as PauseInfo).retryAt;
  const next = retry !== undefined ? ` (next attempt at ${retry})` : '';
  switch (t.kind) {
    case 'disk-full':
      return {
        code: HealthProblemCode.REPLICA_DISK_FULL,
        message: `the replica of ${vm} cannot grow: the data dir's filesystem is full (${code}: ${message}); applying is paused and every recovery point is kept, the cache-store keeps the records; free space on the data dir or grow it, the processor resumes by itself${next}`,
      };
    case 'refused':
      return {
        code: HealthProblemCode.GENERATION_REFUSED,
        message: `the source's newest generation of ${vm} is not applied (${code}: ${message})`,
      };
    case 'replica-store':
      return {
        code: HealthProblemCode.REPLICA_STORE_FAILING,
        message: `the replica of ${vm} cannot be kept (${code}: ${message}); check the data dir's disk (space, I/O errors, damaged files)${next}`,
      };
    case 'apply':
      return {
        code: HealthProblemCode.APPLY_FAILING,
        message: `the stream of ${vm} cannot be applied (${code}: ${message}); see "sr status ${vm}" and the cache-store's log`,
      };
  }
}
