import type { Logger, SourceMode } from '@site-recovery/shared';
import { PointError, PointErrorCode } from '../api/error-codes.js';
import type { RecoveryPoint } from '../points/recovery-point.js';
import type { WatchFacts } from './vm-status.js';

/**
 * The points of a VM whose agent watches its images (agent/README.md, "Watch mode"). Its records are what
 * scans read of an image another process writes, so the replica is a state of the source only right after a
 * clean scan's marker (RecordKind.SCAN). The schedule cuts its point there when the replica still stands
 * at the last clean scan, and otherwise asks for one ({@link want}), which the next clean scan cuts. Nowhere
 * else is a crash-consistent point cut for such a VM.
 */
export class ScanPoints {
  private current: SourceMode = 'nbd';
  private lastScan: number | undefined;
  private wanted = false;

  constructor(
    private readonly vm: string,
    private readonly log: Logger,
  ) {}

  get mode(): SourceMode {
    return this.current;
  }

  set mode(mode: SourceMode) {
    this.current = mode;
  }

  get watched(): boolean {
    return this.current === 'watch';
  }

  /** The LSN of the newest clean-scan marker applied in this generation, if any. */
  get lastCleanScanLsn(): number | undefined {
    return this.lastScan;
  }

  /**
   * The schedule's point is due: cut now when the replica stands right at the last clean scan (the
   * writer has been quiet since), else at the next clean scan.
   */
  async due(applied: number, cut: () => Promise<RecoveryPoint>): Promise<void> {
    if (this.lastScan !== undefined && applied === this.lastScan) {
      this.wanted = false;
      await cut();
    } else this.wanted = true;
  }

  get pointWanted(): boolean {
    return this.wanted;
  }

  /** What the VM's status shows of it (nothing for a VM in NBD mode). */
  facts(): { watch?: WatchFacts } {
    if (!this.watched) return {};
    return { watch: { lastCleanScanLsn: this.lastScan ?? null, pointWanted: this.wanted } };
  }

  /** A new generation (or a replica reopened): no clean scan of it is applied yet. */
  reset(): void {
    this.lastScan = undefined;
  }

  /**
   * At a clean scan's marker, with every record before it landed and none after: cuts the wanted point,
   * unless the VM is not in watch mode (an NBD agent's stream carries no such marker) or its copy runs.
   */
  async atScan(lsn: number, copied: boolean, cut: () => Promise<RecoveryPoint>): Promise<void> {
    this.lastScan = lsn;
    if (!this.watched || !this.wanted || !copied) return;
    this.wanted = false;
    await cut();
  }

  /**
   * What a point "now" (`latest`) is for a watch-mode VM: one cut here when the replica stands right at its
   * last clean scan, else the newest point (every point of it is at a clean scan). SR_POINT_NOT_FOUND when
   * it has none yet: its replica stands in the middle of scans that overlapped the writer.
   */
  async latest(
    applied: number,
    newest: RecoveryPoint | undefined,
    cut: () => Promise<RecoveryPoint>,
  ): Promise<RecoveryPoint> {
    if (this.lastScan !== undefined && applied === this.lastScan) return cut();
    if (newest !== undefined) {
      this.log.warn(
        { vm: this.vm, applied, lastCleanScan: this.lastScan ?? null, point: newest.id },
        'watch mode: the replica is past its last clean scan; the newest point stands for "now"',
      );
      return newest;
    }
    throw new PointError(
      PointErrorCode.POINT_NOT_FOUND,
      `${this.vm} is in watch mode and has no point yet: its replica (LSN ${applied}) stands after a scan that ` +
        'overlapped the writer, which is no state the image had. A point is cut at the next clean scan, once the ' +
        "images are quiet for the agent's debounce (its status shows watch.lastCleanScan)",
    );
  }
}
