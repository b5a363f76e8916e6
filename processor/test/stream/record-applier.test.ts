import { RecordKind, SrError, isSrError, type ChangeRecord } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import { RecordApplier, type ApplyTarget } from '../../src/stream/record-applier.js';

/**
 * A target over an in-memory disk whose asynchronous applies finish in a scrambled order, so only
 * the applier's ordering can make the result right. Records carry one byte value each.
 */
class ScrambledTarget implements ApplyTarget {
  readonly disk = Buffer.alloc(1 << 16);
  readonly landed: number[] = [];
  running = 0;
  maxRunning = 0;
  failAt: number | undefined;
  private readonly pending: (() => void)[] = [];

  constructor(private seed = 7) {}

  apply(r: ChangeRecord): Promise<void> | undefined {
    const land = (): void => {
      if (r.lsn === this.failAt) throw new SrError('SR_IO', `disk failed at ${r.lsn}`);
      this.disk.fill(r.lsn & 0xff, r.offset, r.offset + r.length);
      this.landed.push(r.lsn);
    };
    // Small records land at once (the inline path), the rest in a random order (see finishOne).
    if (r.length <= 64) {
      land();
      return undefined;
    }
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    return new Promise<void>((resolve, reject) => {
      this.pending.push(() => {
        this.running--;
        try {
          land();
          resolve();
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
      if (this.pending.length === 1) setImmediate(() => this.finishOne());
    });
  }

  /** Each turn of the event loop, one apply in flight — picked at random — finishes. */
  private finishOne(): void {
    const [finish] = this.pending.splice(this.rand() % this.pending.length, 1);
    finish!();
    if (this.pending.length > 0) setImmediate(() => this.finishOne());
  }

  private rand(): number {
    this.seed = (this.seed * 1103515245 + 12345) >>> 0;
    return this.seed >>> 16;
  }
}

function records(count: number, span: number, seed = 3): ChangeRecord[] {
  let s = seed;
  const rand = (): number => (s = (s * 69069 + 1) >>> 0) >>> 8;
  return Array.from({ length: count }, (_, i) => {
    const length = rand() % 4 === 0 ? 1 + (rand() % 64) : 65 + (rand() % 2000);
    const offset = rand() % (span - length);
    return { lsn: i + 1, kind: RecordKind.ZERO, disk: 0, offset, length };
  });
}

function sequential(recs: readonly ChangeRecord[], size: number): Buffer {
  const b = Buffer.alloc(size);
  for (const r of recs) b.fill(r.lsn & 0xff, r.offset, r.offset + r.length);
  return b;
}

describe('RecordApplier', () => {
  it('lands overlapping records in LSN order while others overlap in time', async () => {
    const target = new ScrambledTarget();
    const applier = new RecordApplier(target, 0, { maxInFlightRecords: 32 });
    const recs = records(3000, 1 << 14);
    for (let i = 0; i < recs.length; i += 100) await applier.submit(recs.slice(i, i + 100));
    await applier.drain();
    expect(applier.applied).toBe(3000);
    expect(target.disk.equals(sequential(recs, target.disk.length))).toBe(true);
    expect(target.maxRunning).toBeGreaterThan(1);
    expect(target.maxRunning).toBeLessThanOrEqual(32);
  });

  it('reports as applied only a prefix that has fully landed', async () => {
    const target = new ScrambledTarget(11);
    const applier = new RecordApplier(target, 0, { maxInFlightRecords: 16 });
    const recs = records(500, 1 << 16, 5);
    const checks: Promise<void>[] = [];
    const check = (): void => {
      const applied = applier.applied;
      const landed = new Set(target.landed);
      for (let l = 1; l <= applied; l++)
        if (!landed.has(l)) throw new Error(`applied ${applied} but ${l} has not landed`);
    };
    for (let i = 0; i < recs.length; i += 10) {
      await applier.submit(recs.slice(i, i + 10));
      check();
      checks.push(new Promise((resolve) => setImmediate(resolve)).then(check));
    }
    await Promise.all(checks);
    await applier.drain();
    check();
    expect(applier.applied).toBe(500);
  });

  it('refuses records that do not continue the sequence', async () => {
    const applier = new RecordApplier(new ScrambledTarget(), 10);
    const err = await applier
      .submit([{ lsn: 12, kind: RecordKind.ZERO, disk: 0, offset: 0, length: 8 }])
      .catch((e: unknown) => e);
    expect(isSrError(err, 'SR_SEQUENCE')).toBe(true);
    expect(applier.submitted).toBe(10);
  });

  it('stops at a failed record, keeps applied below it, and can rewind', async () => {
    const target = new ScrambledTarget(5);
    target.failAt = 40;
    const applier = new RecordApplier(target, 0, { maxInFlightRecords: 8 });
    const recs = records(200, 1 << 16, 9).map((r) => ({ ...r, length: Math.max(r.length, 65) }));
    const err = await applier.submit(recs).catch((e: unknown) => e);
    expect(isSrError(err, 'SR_IO')).toBe(true);
    await applier.drain();
    expect(applier.failed).toBeDefined();
    expect(applier.applied).toBeLessThan(40);
    expect(applier.applied).toBeGreaterThanOrEqual(39 - 8);
    await expect(applier.submit(recs.slice(applier.submitted))).rejects.toThrow();

    target.failAt = undefined;
    const from = applier.applied;
    applier.rewind(from);
    await applier.submit(recs.slice(from));
    await applier.drain();
    expect(applier.applied).toBe(200);
    expect(target.disk.equals(sequential(recs, target.disk.length))).toBe(true);
  });

  it('bounds the bytes held by records in flight', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const target: ApplyTarget = {
      apply: (r) => {
        inFlight += r.length;
        maxInFlight = Math.max(maxInFlight, inFlight);
        return new Promise((resolve) =>
          setImmediate(() => {
            inFlight -= r.length;
            resolve();
          }),
        );
      },
    };
    const applier = new RecordApplier(target, 0, { maxInFlightRecords: 1000, maxInFlightBytes: 64 * 1024 });
    const recs = Array.from({ length: 100 }, (_, i): ChangeRecord => ({
      lsn: i + 1,
      kind: RecordKind.ZERO,
      disk: 0,
      offset: i * 16384,
      length: 16384,
    }));
    await applier.submit(recs);
    await applier.drain();
    expect(maxInFlight).toBeLessThanOrEqual(64 * 1024);
    expect(applier.applied).toBe(100);
  });
});
