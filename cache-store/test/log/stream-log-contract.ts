import { randomBytes } from 'node:crypto';
import { isSrError } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import type { StoredFrame, StreamLog, StreamStore } from '../../src/log/stream-log.js';

const DISKS = [{ id: 'os', size: 1 << 30 }];

/** A frame of `count` records from `first`; the bytes need not be a batch for the storage layer. */
export function frame(first: number, count = 3, size = 1000): StoredFrame {
  const b = randomBytes(size);
  b.writeUInt32BE(first, 0);
  return { first, last: first + count - 1, frame: b };
}

export async function readAll(log: StreamLog, from = 1): Promise<StoredFrame[]> {
  const out: StoredFrame[] = [];
  for await (const f of log.read(from)) out.push({ first: f.first, last: f.last, frame: Buffer.from(f.frame) });
  return out;
}

/** Appends `n` frames of `count` records after the log's last LSN; returns them. */
export function appendN(log: StreamLog, n: number, count = 3, size = 1000): StoredFrame[] {
  const out: StoredFrame[] = [];
  for (let i = 0; i < n; i++) {
    const f = frame(log.appendedLsn + 1, count, size);
    log.append(f);
    out.push(f);
  }
  return out;
}

const same = (a: readonly StoredFrame[], b: readonly StoredFrame[]): void => {
  expect(a.map((f) => [f.first, f.last])).toEqual(b.map((f) => [f.first, f.last]));
  a.forEach((f, i) => expect(f.frame.equals(b[i]!.frame)).toBe(true));
};

/**
 * The contract of {@link StreamStore} and {@link StreamLog}, run against every implementation.
 * `open(key)` returns a store over the same storage each time it is called with the same key.
 */
export function streamStoreContract(name: string, open: (key: string) => Promise<StreamStore>): void {
  describe(`${name}: stream store contract`, () => {
    it('starts a new VM empty and serves back what was appended, byte for byte, once durable', async () => {
      const store = await open('roundtrip');
      const log = await store.openGeneration('vm1', 'g1', DISKS);
      expect([log.vm, log.generation, log.disks]).toEqual(['vm1', 'g1', DISKS]);
      expect([log.firstLsn, log.durableLsn, log.appendedLsn, log.appliedLsn]).toEqual([1, 0, 0, 0]);
      const frames = appendN(log, 20);
      expect(log.appendedLsn).toBe(60);
      expect(await log.sync()).toBe(60);
      expect(log.durableLsn).toBe(60);
      same(await readAll(log), frames);
      expect(store.logs().map((l) => l.vm)).toEqual(['vm1']);
      expect(store.get('vm1')).toBe(log);
      await store.close();
    });

    it('refuses a frame that does not follow on, with SR_SEQUENCE, and changes nothing', async () => {
      const store = await open('sequence');
      const log = await store.openGeneration('vm1', 'g1', DISKS);
      log.append(frame(1, 5));
      for (const bad of [frame(7), frame(5), frame(1)]) {
        let err: unknown;
        try {
          log.append(bad);
        } catch (e) {
          err = e;
        }
        expect(isSrError(err, 'SR_SEQUENCE')).toBe(true);
      }
      expect(log.appendedLsn).toBe(5);
      log.append(frame(6));
      expect(await log.sync()).toBe(8);
      await store.close();
    });

    it('tells watchers of frames only once they are durable, in order, each once', async () => {
      const store = await open('watch');
      const log = await store.openGeneration('vm1', 'g1', DISKS);
      const seen: StoredFrame[] = [];
      const unwatch = log.watch({
        durable: (frames, lsn) => {
          expect(lsn).toBe(frames[frames.length - 1]!.last);
          expect(log.durableLsn).toBeGreaterThanOrEqual(lsn);
          seen.push(...frames);
        },
        failed: () => undefined,
      });
      const frames = appendN(log, 50);
      expect(seen).toEqual([]); // nothing is durable in the same turn as the append
      await log.sync();
      same(seen, frames);
      unwatch();
      appendN(log, 2);
      await log.sync();
      expect(seen.length).toBe(50);
      await store.close();
    });

    it('read(from) starts at the frame holding from, ends at the durable LSN, and refuses what is not held', async () => {
      const store = await open('from');
      const log = await store.openGeneration('vm1', 'g1', DISKS);
      const frames = appendN(log, 10, 4); // LSNs 1..40
      await log.sync();
      same(await readAll(log, 18), frames.slice(4)); // frame 17..20 holds 18
      same(await readAll(log, 21), frames.slice(5));
      same(await readAll(log, 41), []);
      const err = await readAll(log, 0).catch((e: unknown) => e);
      expect(isSrError(err, 'SR_SEQUENCE')).toBe(true);
      await store.close();
    });

    it('release records the applied LSN durably and keeps everything after it readable', async () => {
      const store = await open('release');
      const log = await store.openGeneration('vm1', 'g1', DISKS);
      const frames = appendN(log, 30, 2); // LSNs 1..60
      await log.sync();
      await log.release(30);
      expect(log.appliedLsn).toBe(30);
      await log.release(10); // lower: no change
      expect(log.appliedLsn).toBe(30);
      const err = await log.release(61).catch((e: unknown) => e);
      expect(isSrError(err, 'SR_SEQUENCE')).toBe(true);
      expect(log.firstLsn).toBeLessThanOrEqual(31);
      same(await readAll(log, 31), frames.slice(15));
      await store.close();
      const again = await open('release');
      const back = again.get('vm1')!;
      expect(back.appliedLsn).toBe(30);
      same(await readAll(back, 31), frames.slice(15));
      await again.close();
    });

    it('keeps generation, disks and every durable frame across a reopen, and continues the sequence', async () => {
      const store = await open('reopen');
      const log = await store.openGeneration('vm1', 'g1', DISKS);
      const frames = appendN(log, 25);
      await log.sync();
      await store.close();
      const again = await open('reopen');
      const back = again.get('vm1')!;
      expect([back.generation, back.disks, back.durableLsn, back.appendedLsn]).toEqual(['g1', DISKS, 75, 75]);
      expect(await again.openGeneration('vm1', 'g1', DISKS)).toBe(back);
      const more = appendN(back, 2);
      await back.sync();
      same(await readAll(back), [...frames, ...more]);
      await again.close();
    });

    it('keeps the replication group across a reopen, with releases written around it; a new generation has none', async () => {
      const store = await open('group');
      const log = await store.openGeneration('vm1', 'g1', DISKS);
      expect(log.group).toBeUndefined();
      appendN(log, 10, 2);
      await log.sync();
      // A release and a group change racing: each meta write keeps the other's field.
      await Promise.all([log.release(8), log.setGroup('erp'), log.release(12)]);
      expect(log.group).toBe('erp');
      await store.close();
      const again = await open('group');
      const back = again.get('vm1')!;
      expect([back.group, back.appliedLsn]).toEqual(['erp', 12]);
      await back.setGroup(undefined);
      await again.close();
      const third = await open('group');
      expect(third.get('vm1')!.group).toBeUndefined();
      await third.get('vm1')!.setGroup('erp');
      const next = await third.openGeneration('vm1', 'g2', DISKS);
      expect(next.group).toBeUndefined();
      await third.close();
    });

    it("keeps the agent's mode across a reopen beside the group and releases; a new generation has none", async () => {
      const store = await open('mode');
      const log = await store.openGeneration('vm1', 'g1', DISKS);
      expect(log.mode).toBeUndefined();
      appendN(log, 10, 2);
      await log.sync();
      await Promise.all([log.setGroup('erp'), log.setMode('watch'), log.release(8)]);
      await store.close();
      const again = await open('mode');
      const back = again.get('vm1')!;
      expect([back.mode, back.group, back.appliedLsn]).toEqual(['watch', 'erp', 8]);
      await back.setGroup(undefined);
      await again.close();
      const third = await open('mode');
      expect([third.get('vm1')!.mode, third.get('vm1')!.group]).toEqual(['watch', undefined]);
      const next = await third.openGeneration('vm1', 'g2', DISKS);
      expect(next.mode).toBeUndefined();
      await third.close();
    });

    it('a new generation replaces the old one: empty, durable 0, old records gone, also after a reopen', async () => {
      const store = await open('generation');
      const old = await store.openGeneration('vm1', 'g1', DISKS);
      appendN(old, 10);
      await old.sync();
      await old.release(6);
      const disks2 = [...DISKS, { id: 'data', size: 4096 }];
      const log = await store.openGeneration('vm1', 'g2', disks2);
      expect(log).not.toBe(old);
      expect([log.generation, log.disks, log.firstLsn, log.durableLsn, log.appliedLsn]).toEqual([
        'g2',
        disks2,
        1,
        0,
        0,
      ]);
      expect(await readAll(log)).toEqual([]);
      expect(store.logs()).toEqual([log]);
      const frames = appendN(log, 3);
      await log.sync();
      await store.close();
      const again = await open('generation');
      const back = again.get('vm1')!;
      expect([back.generation, back.durableLsn]).toEqual(['g2', 9]);
      same(await readAll(back), frames);
      await again.close();
    });

    it('holds the streams of several VMs apart', async () => {
      const store = await open('several');
      const a = await store.openGeneration('vm-a', 'ga', DISKS);
      const b = await store.openGeneration('vm-b', 'gb', DISKS);
      const fa = appendN(a, 4);
      const fb = appendN(b, 7);
      await Promise.all([a.sync(), b.sync()]);
      await store.close();
      const again = await open('several');
      expect(
        again
          .logs()
          .map((l) => l.vm)
          .sort(),
      ).toEqual(['vm-a', 'vm-b']);
      same(await readAll(again.get('vm-a')!), fa);
      same(await readAll(again.get('vm-b')!), fb);
      await again.close();
    });

    it('checkWritable resolves undefined while storage works, also for concurrent checks, and stores no VM', async () => {
      const store = await open('writable');
      expect(await Promise.all([store.checkWritable(), store.checkWritable()])).toEqual([undefined, undefined]);
      expect(await store.checkWritable()).toBeUndefined();
      await store.close();
      const again = await open('writable');
      expect(again.logs()).toEqual([]);
      expect(again.damaged()).toEqual([]);
      await again.close();
    });

    it('a reader that runs while appends go on sees only durable frames, in order', async () => {
      const store = await open('concurrent');
      const log = await store.openGeneration('vm1', 'g1', DISKS);
      const all: StoredFrame[] = [];
      let next = 1;
      const got: StoredFrame[] = [];
      for (let round = 0; round < 20; round++) {
        all.push(...appendN(log, 5));
        for await (const f of log.read(next)) {
          expect(f.last).toBeLessThanOrEqual(log.durableLsn);
          got.push({ ...f, frame: Buffer.from(f.frame) });
          next = f.last + 1;
        }
        if (round % 3 === 0) await log.sync();
      }
      await log.sync();
      got.push(...(await readAll(log, next)));
      same(got, all);
      await store.close();
    });
  });
}
