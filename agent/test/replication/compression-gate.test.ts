import { describe, expect, it } from 'vitest';
import { CompressionGate } from '../../src/replication/compression-gate.js';

/** Runs the gate over a stream where `compressible(i)` says whether batch i would shrink; returns attempts. */
function attempts(gate: CompressionGate, n: number, compressible: (i: number) => boolean): number[] {
  const tried: number[] = [];
  for (let i = 0; i < n; i++) {
    if (!gate.shouldTry()) continue;
    tried.push(i);
    gate.record(compressible(i));
  }
  return tried;
}

describe('CompressionGate', () => {
  it('keeps trying every batch of a compressible stream', () => {
    expect(attempts(new CompressionGate(), 100, () => true)).toHaveLength(100);
  });

  it('pauses after `misses` failures in a row, then probes once every `skip` batches', () => {
    const tried = attempts(new CompressionGate({ misses: 4, skip: 10 }), 60, () => false);
    expect(tried).toEqual([0, 1, 2, 3, 14, 25, 36, 47, 58]);
  });

  it('resumes compressing everything as soon as a probe succeeds', () => {
    const gate = new CompressionGate({ misses: 2, skip: 5 });
    const tried = attempts(gate, 30, (i) => i >= 10);
    // 0,1 fail -> skip 2..6; probe 7 fails -> skip 8..12; probe 13 succeeds -> every batch after it.
    expect(tried).toEqual([0, 1, 7, 13, ...Array.from({ length: 16 }, (_, k) => 14 + k)]);
    expect(gate.paused).toBe(false);
  });

  it('does not pause on failures that are not consecutive', () => {
    expect(attempts(new CompressionGate({ misses: 3, skip: 50 }), 40, (i) => i % 3 === 2)).toHaveLength(40);
  });
});
