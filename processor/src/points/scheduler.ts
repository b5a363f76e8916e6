import type { Logger } from '@site-recovery/shared';
import { PointError } from '../api/error-codes.js';
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
        await this.runVm(v);
      } catch (err) {
        this.log.warn(
          { vm: v.vm, code: (err as { code?: string }).code, err: (err as Error).message },
          'recovery point schedule failed',
        );
      }
    }
  }

  private async runVm(v: VmReplication): Promise<void> {
    const replica = v.current;
    if (replica === undefined || v.failover !== 'none' || !v.usable) return;
    const config = await this.config(v.vm);
    const now = Date.now();
    const newest = replica.points.newest();
    const last = this.lastCut.get(v.vm) ?? (newest !== undefined ? Date.parse(newest.time) : 0);
    const moved = newest === undefined || newest.generation !== replica.info().generation || v.appliedLsn > newest.lsn;
    if (moved && now - last >= config.crashConsistentFrequencyMs) {
      this.lastCut.set(v.vm, now);
      try {
        await v.cutPoint('crash');
      } catch (err) {
        // Mid-resync or a storage fault: the next period tries again.
        if (!(err instanceof PointError)) throw err;
      }
    }
    const prune = pointsToPrune(replica.points.list(), config);
    if (prune.length > 0 && !(await replica.points.remove(prune, true)))
      this.log.debug({ vm: v.vm }, 'retention deferred: a point is being recovered');
  }
}
