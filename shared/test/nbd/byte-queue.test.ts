import { describe, expect, it } from 'vitest';
import { ByteQueue } from '../../src/nbd/byte-queue.js';

function queueOf(...chunks: string[]): ByteQueue {
  const q = new ByteQueue();
  for (const c of chunks) q.push(Buffer.from(c));
  return q;
}

describe('ByteQueue', () => {
  it('takes a field inside one chunk without copying, and one spanning chunks by copying', () => {
    const q = queueOf('abc', 'defg', 'h');
    expect(q.isContiguous(2)).toBe(true);
    expect(q.isContiguous(4)).toBe(false);
    expect(q.take(2).toString()).toBe('ab');
    expect(q.take(4).toString()).toBe('cdef');
    expect(q.length).toBe(2);
    expect(q.take(2).toString()).toBe('gh');
    expect(q.length).toBe(0);
  });

  it('fills a caller buffer across chunks and consumes exactly that much', () => {
    const q = queueOf('01', '2345', '6', '789');
    q.skip(1);
    const out = Buffer.alloc(7);
    q.takeInto(out);
    expect(out.toString()).toBe('1234567');
    expect(q.length).toBe(2);
    expect(q.peek(2).toString()).toBe('89');
  });

  it('peeks without consuming, across chunks', () => {
    const q = queueOf('ab', 'cd');
    expect(q.peek(3).toString()).toBe('abc');
    expect(q.length).toBe(4);
  });
});
