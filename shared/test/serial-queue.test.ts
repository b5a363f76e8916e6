import { describe, expect, it } from 'vitest';
import { KeyedSerialQueue, SerialQueue } from '../src/serial-queue.js';

/** A task that records when it starts and finishes, and settles when told. */
function gate(log: string[], name: string): { task: () => Promise<string>; open: () => void; fail: () => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const settled = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return {
    task: async () => {
      log.push(`start ${name}`);
      await settled;
      log.push(`end ${name}`);
      return name;
    },
    open: () => resolve(),
    fail: () => reject(new Error(`${name} failed`)),
  };
}

describe('SerialQueue', () => {
  it('runs tasks one at a time in the order queued', async () => {
    const q = new SerialQueue();
    const log: string[] = [];
    const a = gate(log, 'a');
    const b = gate(log, 'b');
    const pa = q.run(a.task);
    const pb = q.run(b.task);
    await Promise.resolve();
    b.open(); // b may not start before a ends, however early it is ready
    await new Promise((r) => setImmediate(r));
    expect(log).toEqual(['start a']);
    a.open();
    await expect(pa).resolves.toBe('a');
    await expect(pb).resolves.toBe('b');
    expect(log).toEqual(['start a', 'end a', 'start b', 'end b']);
  });

  it('a failed task fails its caller only; the next one still runs', async () => {
    const q = new SerialQueue();
    const log: string[] = [];
    const a = gate(log, 'a');
    const b = gate(log, 'b');
    const pa = q.run(a.task);
    const pb = q.run(b.task);
    a.fail();
    await expect(pa).rejects.toThrow('a failed');
    b.open();
    await expect(pb).resolves.toBe('b');
    await expect(q.idle()).resolves.toBeUndefined();
  });
});

describe('KeyedSerialQueue', () => {
  it('orders tasks per key, runs keys independently, and forgets idle keys', async () => {
    const q = new KeyedSerialQueue<string>();
    const log: string[] = [];
    const a1 = gate(log, 'a1');
    const a2 = gate(log, 'a2');
    const b1 = gate(log, 'b1');
    const p1 = q.run('a', a1.task);
    const p2 = q.run('a', a2.task);
    const p3 = q.run('b', b1.task);
    await new Promise((r) => setImmediate(r));
    expect(log).toEqual(['start a1', 'start b1']);
    expect(q.size).toBe(2);
    b1.open();
    await p3;
    a1.fail();
    await expect(p1).rejects.toThrow('a1 failed');
    let idle = false;
    void q.idle().then(() => (idle = true));
    await new Promise((r) => setImmediate(r));
    expect(idle).toBe(false); // a2 is still queued
    a2.open();
    await expect(p2).resolves.toBe('a2');
    await q.idle();
    await new Promise((r) => setImmediate(r));
    expect(q.size).toBe(0);
  });
});
