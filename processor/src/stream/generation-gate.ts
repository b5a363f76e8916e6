import { ErrorCode, SrError, type DiskInfo, type Logger } from '@site-recovery/shared';
import type { ReplicaStore } from '../replica/replica-store.js';
import { sameDisks, type Replica } from '../replica/replica-store.js';

export interface GenerationGateOptions {
  /**
   * Most retired replicas (older disk layouts, each a full set of disks kept for its points) a VM may
   * keep. A generation with yet another layout past it is refused (SR_TOO_MANY_REPLICAS) and its stream
   * not applied, rather than any point deleted; it is taken once retention has removed an old replica's
   * last point. Layout changes are rare (a disk added, grown or replaced), so 3 leaves room for a few
   * within a retention period while a source that floods layouts cannot fill the target. Default 3.
   */
  readonly maxRetiredReplicas?: number;
  /** Largest disk a source may declare; a bigger one refuses its generation (SR_LIMIT). Default 64 TiB. */
  readonly maxDiskBytes?: number;
}

export const DEFAULT_MAX_RETIRED_REPLICAS = 3;
export const DEFAULT_MAX_DISK_BYTES = 64 * 1024 ** 4;

/** The code a generation refused for the retired-replica limit carries (status, health). */
export const TOO_MANY_REPLICAS = 'SR_TOO_MANY_REPLICAS';

/** A refused generation is looked at again at most this often, once retention may have made room. */
const RECHECK_MS = 5000;

/** A generation the processor does not apply, kept with why until it can be taken. */
export interface RefusedGeneration {
  readonly generation: string;
  readonly disks: readonly DiskInfo[];
  readonly code: string;
  readonly message: string;
  readonly at: string;
}

/**
 * Why the stream of `generation` with `disks` cannot start on `replica` (none yet: `undefined`), or
 * `undefined` when it can. Checked before anything changes, so a refusal keeps every replica and point.
 */
export function refuseGeneration(
  vm: string,
  replica: Replica | undefined,
  generation: string,
  disks: readonly DiskInfo[],
  o: GenerationGateOptions,
): { code: string; message: string } | undefined {
  const maxDisk = o.maxDiskBytes ?? DEFAULT_MAX_DISK_BYTES;
  const big = disks.find((d) => d.size > maxDisk);
  if (big !== undefined)
    return {
      code: ErrorCode.LIMIT,
      message:
        `generation ${generation} of ${vm} declares disk ${big.id} of ${big.size} bytes, more than maxDiskBytes ${maxDisk}; ` +
        'its stream is not applied (raise --max-disk-bytes if the disk is real)',
    };
  if (replica === undefined || sameDisks(replica.info().disks, disks)) return undefined;
  // Only a replica holding points is retired; one without simply gets the new disks.
  if (replica.points.newest() === undefined) return undefined;
  const max = o.maxRetiredReplicas ?? DEFAULT_MAX_RETIRED_REPLICAS;
  const kept = replica.retired().length;
  if (kept < max) return undefined;
  return {
    code: TOO_MANY_REPLICAS,
    message:
      `generation ${generation} of ${vm} has another disk layout, and ${vm} already keeps ${kept} older replicas ` +
      `(maxRetiredReplicas ${max}); its stream is not applied and every recovery point is kept. It is taken once ` +
      'retention has removed the last point of an older replica; or fail over, or raise --max-retired-replicas',
  };
}

/**
 * Which generation of a VM may start (`refuseGeneration`), the one refused while it cannot, and whether
 * the current one started on a replica made for it (no earlier data: no base for a checksum resync).
 */
export class GenerationGate {
  private refusal: RefusedGeneration | undefined;
  private recheckAt = 0;
  private fresh: { generation: string; reason: string } | undefined;

  constructor(
    private readonly vm: string,
    private readonly log: Logger,
    private readonly o: GenerationGateOptions,
  ) {}

  get refused(): RefusedGeneration | undefined {
    return this.refusal;
  }

  /** Whether batches of `generation` are to be ignored: it was refused. */
  refuses(generation: string): boolean {
    return this.refusal?.generation === generation;
  }

  /** Whether `generation` may start on `replica`; when not, the refusal is kept (and logged once). */
  admit(replica: Replica | undefined, generation: string, disks: readonly DiskInfo[]): boolean {
    const why = refuseGeneration(this.vm, replica, generation, disks, this.o);
    if (why === undefined) return true;
    const same = this.refusal?.generation === generation;
    if (!same || this.refusal?.code !== why.code)
      this.log.error({ vm: this.vm, generation, code: why.code, err: why.message }, 'generation refused');
    const at = same ? this.refusal!.at : new Date().toISOString();
    this.refusal = { generation, disks: disks.map((d) => ({ id: d.id, size: d.size })), ...why, at };
    return false;
  }

  /** The stream of `generation` began; `freshReason`: its replica was made for it, and why. */
  began(generation: string, freshReason?: string): void {
    this.refusal = undefined;
    if (freshReason !== undefined) this.fresh = { generation, reason: freshReason };
    else if (this.fresh?.generation !== generation) this.fresh = undefined;
  }

  /** Whether the refused generation could be taken now (looked at no more than every 5 s). */
  mayRetry(replica: Replica | undefined): boolean {
    const r = this.refusal;
    if (r === undefined || Date.now() < this.recheckAt) return false;
    this.recheckAt = Date.now() + RECHECK_MS;
    if (refuseGeneration(this.vm, replica, r.generation, r.disks, this.o) !== undefined) return false;
    this.log.info({ vm: this.vm, generation: r.generation }, 'the refused generation can be taken now');
    return true;
  }

  /**
   * Whether a checksum resync of `generation` has a base: its stream began on `current` (the
   * replica's generation), which holds an earlier generation's data with the same layout.
   */
  sumsBase(
    current: string | undefined,
    generation: string,
  ): { available: true } | { available: false; reason: string } {
    if (this.refusal?.generation === generation)
      return { available: false, reason: `generation refused (${this.refusal.code})` };
    if (current !== generation)
      return { available: false, reason: 'the stream of this generation has not begun on the processor' };
    if (this.fresh?.generation === generation) return { available: false, reason: this.fresh.reason };
    return { available: true };
  }
}

/**
 * Starts `generation` of `vm`: a replica is created, or the current one reset (`Replica.reset`: it
 * keeps its data with the same layout, and is retired beside new disks with another). Returns the
 * replica and, when it was made for this generation, why (it holds no base for a checksum resync).
 */
export async function startGeneration(
  store: ReplicaStore,
  vm: string,
  replica: Replica | undefined,
  generation: string,
  disks: readonly DiskInfo[],
  log: Logger,
): Promise<{ replica: Replica; fresh?: string }> {
  if (replica === undefined) {
    log.info({ vm, generation, disks }, 'creating replica');
    return { replica: await store.create(vm, generation, disks), fresh: 'no replica before this generation' };
  }
  const info = replica.info();
  const same = sameDisks(info.disks, disks);
  log.info(
    { vm, from: info.generation, to: generation, sameDisks: same },
    same ? 'new generation: the replica is its base' : 'new generation with another disk layout',
  );
  await replica.reset(generation, disks);
  return same ? { replica } : { replica, fresh: 'disk layout changed' };
}

/** Within one generation the disk layout is fixed (records name disks by index): another is SR_STATE_MISMATCH. */
export function checkSameLayout(
  vm: string,
  generation: string,
  held: readonly DiskInfo[],
  declared: readonly DiskInfo[],
): void {
  if (sameDisks(held, declared)) return;
  const describe = (disks: readonly DiskInfo[]): string => disks.map((d) => `${d.id}(${d.size} B)`).join(', ');
  throw new SrError(
    ErrorCode.STATE_MISMATCH,
    `stream of ${vm} generation ${generation} declares disks ${describe(declared)}, the replica has ${describe(held)}`,
  );
}
