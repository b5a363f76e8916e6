import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { TokenBucket } from '../../src/replication/token-bucket.js';

// Fake timers and a clock read from them: every wait is exact, so the bucket's arithmetic is checked to
// the millisecond without any real time passing.
describe('TokenBucket', () => {
  beforeEach(() => void vi.useFakeTimers({ now: 0 }));
  afterEach(() => void vi.useRealTimers());

  /** 1000 bytes per second, burst 100: a byte per millisecond. */
  const bucket = (): TokenBucket => new TokenBucket(1000, 100, () => Date.now());

  /** Resolves the take's outcome, or 'waiting' if it has not settled after `ms` more fake milliseconds. */
  async function after(p: Promise<boolean>, ms: number): Promise<boolean | 'waiting'> {
    let out: boolean | 'waiting' = 'waiting';
    void p.then((v) => (out = v));
    await vi.advanceTimersByTimeAsync(ms);
    return out;
  }

  it('starts full: the burst goes at once, the next send waits for its bytes to accrue', async () => {
    const b = bucket();
    expect(await after(b.take(100), 0)).toBe(true);
    const next = b.take(50);
    expect(await after(next, 49)).toBe('waiting');
    expect(b.status().held).toBe(true);
    expect(await after(next, 1)).toBe(true);
    expect(b.status()).toEqual({ held: false, heldMs: 50 });
  });

  it('accrues no more than the burst while idle', async () => {
    const b = bucket();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(await after(b.take(100), 0)).toBe(true);
    expect(await after(b.take(1), 0)).toBe('waiting');
  });

  it('lets a send larger than the burst go when full, and the debt delays the sends after it', async () => {
    const b = bucket();
    expect(await after(b.take(300), 0)).toBe(true); // 200 in debt
    const next = b.take(100);
    // -200 + t ≥ 100 at t = 300 ms.
    expect(await after(next, 299)).toBe('waiting');
    expect(await after(next, 1)).toBe(true);
  });

  it('never lets more through than rate × elapsed + burst', async () => {
    const b = bucket();
    let sent = 0;
    for (let i = 0; i < 40; i++) {
      const p = b.take(37);
      while ((await after(p, 1)) === 'waiting');
      sent += 37;
      expect(sent).toBeLessThanOrEqual(Date.now() + 100);
    }
    // ... and about that much: it does not fall behind the rate either.
    expect(sent).toBeGreaterThanOrEqual(Date.now() + 100 - 37 - 1);
  });

  it('interrupt ends a wait with false and takes nothing', async () => {
    const b = bucket();
    await after(b.take(100), 0);
    const p = b.take(100);
    expect(await after(p, 30)).toBe('waiting');
    b.interrupt();
    expect(await after(p, 0)).toBe(false);
    expect(b.status()).toEqual({ held: false, heldMs: 30 });
    // The 30 bytes accrued meanwhile are still there: 70 more are needed.
    expect(await after(b.take(100), 69)).toBe('waiting');
  });

  it('refuses a rate or burst that is not positive', () => {
    expect(() => new TokenBucket(0, 100)).toThrow(RangeError);
    expect(() => new TokenBucket(100, 0)).toThrow(RangeError);
  });
});
