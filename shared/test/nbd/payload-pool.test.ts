import { describe, expect, it } from 'vitest';
import { isPageAligned } from '../../src/direct-io.js';
import { PayloadPool, type Payload } from '../../src/nbd/payload-pool.js';

// A pool bug would hand one request's memory to another while the first is still being written:
// silent corruption of the VM's data. These tests fill every live payload with its own pattern and
// check it survives every later allocation.
describe('PayloadPool', () => {
  it('never lets two live payloads share a byte, under a random mix of sizes and releases', () => {
    const pool = new PayloadPool({ slabBytes: 64 * 1024, maxSlabs: 4 });
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const live: { p: Payload; fill: number }[] = [];
    for (let i = 0; i < 5000; i++) {
      if (live.length > 0 && rand(3) === 0) {
        const [x] = live.splice(rand(live.length), 1);
        expect(x!.p.buf.every((b) => b === x!.fill)).toBe(true);
        x!.p.release();
        continue;
      }
      const size = 1 + rand(20 * 1024); // beyond a quarter slab sometimes: own buffers
      const p = pool.alloc(size);
      expect(p.buf.length).toBe(size);
      const fill = i & 0xff;
      p.buf.fill(fill);
      live.push({ p, fill });
    }
    for (const x of live) expect(x.p.buf.every((b) => b === x.fill)).toBe(true);
    expect(pool.slabCount).toBeLessThanOrEqual(4);
  });

  it('reuses a slab once everything carved from it is released, and allocates no more slabs', () => {
    const pool = new PayloadPool({ slabBytes: 1024 * 1024, maxSlabs: 2 });
    const first = pool.alloc(200 * 1024);
    const slab = first.buf.buffer;
    first.release();
    for (let round = 0; round < 100; round++) {
      const ps = [pool.alloc(256 * 1024), pool.alloc(256 * 1024), pool.alloc(256 * 1024)];
      for (const p of ps) p.release();
    }
    expect(pool.slabCount).toBe(1);
    expect(pool.alloc(1024).buf.buffer).toBe(slab);
  });

  it('gives payloads their own memory past a quarter slab and when every slab is busy', () => {
    const pool = new PayloadPool({ slabBytes: 64 * 1024, maxSlabs: 1 });
    const big = pool.alloc(16 * 1024 + 1);
    expect(big.buf.buffer.byteLength).toBeLessThan(64 * 1024); // not a slab
    const held = [pool.alloc(16 * 1024), pool.alloc(16 * 1024), pool.alloc(16 * 1024), pool.alloc(16 * 1024)];
    const overflow = pool.alloc(16 * 1024); // the only slab is full and busy
    expect(overflow.buf.buffer).not.toBe(held[0]!.buf.buffer);
    overflow.buf.fill(9);
    for (const h of held) h.buf.fill(1);
    expect(overflow.buf.every((b) => b === 9)).toBe(true);
    expect(pool.slabCount).toBe(1);
  });

  it('starts payloads of a page and more on a page boundary, so the journal can write them with O_DIRECT in place', () => {
    const pool = new PayloadPool({ slabBytes: 1024 * 1024, maxSlabs: 2 });
    const sizes = [100, 5000, 4096, 3, 70_000, 4095, 8192];
    const got = sizes.map((n) => pool.alloc(n));
    expect(got.filter((p) => p.buf.length >= 4096).every((p) => isPageAligned(p.buf))).toBe(true);
    // Smaller ones still pack right behind the one before.
    expect(got[3]!.buf.byteOffset).toBe(got[2]!.buf.byteOffset + 4096);
    expect(got[5]!.buf.byteOffset).toBe(got[4]!.buf.byteOffset + 70_000);
    expect(isPageAligned(got[5]!.buf)).toBe(false);
    expect(pool.slabCount).toBe(1);
  });

  it('treats a second release as a no-op', () => {
    const pool = new PayloadPool({ slabBytes: 64 * 1024, maxSlabs: 1 });
    const a = pool.alloc(16 * 1024);
    const b = pool.alloc(16 * 1024);
    a.release();
    a.release(); // must not count b's use as released
    b.buf.fill(7);
    // Had b's use been dropped, the slab would start over at 0 and the second of these would cover b.
    for (const c of [pool.alloc(16 * 1024), pool.alloc(16 * 1024)]) c.buf.fill(3);
    expect(b.buf.every((x) => x === 7)).toBe(true);
  });
});
