import type { Logger } from '@site-recovery/shared';
import { PointError } from '../api/error-codes.js';
import { asStorageError, errorInfo } from '../stream/storage-error.js';
import type { ErrorInfo } from '../stream/vm-status.js';
import { pointsToPrune } from './retention.js';
import type { VmConfig } from '../vm-config.js';
import type { VmReplication } from '../stream/vm-replication.js';

export interface PointSchedulerOptions {
  /** How often schedules and retention are checked; bounds how late a scheduled cut can be. Default 250 ms. */
  readonly pointTickMs?: number;
}

export const DEFAULT_POINT_TICK_MS = 250;

/**
 * Cuts crash-consistent points on each VM's schedule and applies its retention policy. A VM that
 * applied nothing since its newest point gets no new point (it would be the same one), so when the
 * source is gone the points stop moving and retention — measured from the newest point — keeps them.
 */
export class PointScheduler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly lastCut = new Map<string, number>();
  /** VMs whose last cut or prune failed, with why; a later pass that cuts or prunes clears it. */
  private readonly failures = new Map<string, ErrorInfo>();

  constructor(
    private readonly vms: () => Iterable<VmReplication>,
    private readonly config: (vm: string) => Promise<VmConfig>,
    private readonly log: Logger,
    private readonly o: PointSchedulerOptions = {},
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      this.running ??= this.tick().finally(() => (this.running = undefined));
    }, this.o.pointTickMs ?? DEFAULT_POINT_TICK_MS);
  }

  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    await this.running;
  }

  /** One pass over every VM (exposed so tests can drive it). */
  async tick(): Promise<void> {
    for (const v of this.vms()) {
      try {
        // A failure stands until a later pass cuts or prunes (or has nothing left to do for the VM).
        if (await this.runVm(v)) this.failures.delete(v.vm);
      } catch (err) {
        const e = asStorageError(err, `recovery points of ${v.vm}`);
        this.failures.set(v.vm, errorInfo(e));
        this.log.warn({ vm: v.vm, code: e.code, err: e.message }, 'recovery point schedule failed');
      }
    }
  }

  /** VMs whose last cut or prune failed and has not succeeded since, with the failure. */
  failing(): ReadonlyMap<string, ErrorInfo> {
    return this.failures;
  }

  /** One VM's pass; false when it had nothing to do (no cut due, nothing to prune). */
  private async runVm(v: VmReplication): Promise<boolean> {
    const replica = v.current;
    if (replica === undefined || v.failover !== 'none' || !v.usable) return true;
    const config = await this.config(v.vm);
    const now = Date.now();
    const newest = replica.points.newest();
    const last = this.lastCut.get(v.vm) ?? (newest !== undefined ? Date.parse(newest.time) : 0);
    const moved = newest === undefined || newest.generation !== replica.info().generation || v.appliedLsn > newest.lsn;
    const due = moved && now - last >= config.crashConsistentFrequencyMs;
    if (due) {
      this.lastCut.set(v.vm, now);
      try {
        await v.cutScheduled();
      } catch (err) {
        // Mid-resync or a storage fault: the next period tries again.
        if (!(err instanceof PointError)) throw err;
      }
    }
    const prune = pointsToPrune(replica.points.list(), config);
    if (prune.length > 0 && !(await replica.points.remove(prune, true)))
      this.log.debug({ vm: v.vm }, 'retention deferred: a point is being recovered');
    return due || prune.length > 0;
  }
}
