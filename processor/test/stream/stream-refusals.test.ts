import { RecordKind, encodeBatch, recordChecksum, type ChangeRecord } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import type { CacheStoreFixture } from '../cache-store-fixture.js';
import { useProcessorCases } from '../processor-cases.js';
import type { TapSession } from '../wire-tap.js';
import { Workload } from '../workload.js';
import { expectImages, getJson, replicaBytes, vmStatus } from '../helpers.js';
import { DISKS, VM } from './stream-vm.js';

const cases = useProcessorCases('stream-refusals');

/** A batch frame as the agent would build it (for injection: frames the cache-store would refuse to store). */
async function batchFrame(vm: string, generation: string, records: readonly ChangeRecord[]): Promise<Buffer> {
  return (await encodeBatch(records, { vm, generation })).frame;
}

/** `good` records stored and confirmed, then the next 20 built but not sent. */
async function replicatedUpTo(cs: CacheStoreFixture, seed: number) {
  const w = new Workload(DISKS, seed);
  w.random(40, 128 * 1024);
  const good = w.lastLsn;
  const agent = await cs.agent(VM, 'g1', DISKS);
  await agent.store(w.range(1, good));
  await cs.tap.confirmedAtLeast(VM, good);
  w.random(20, 128 * 1024);
  return { w, good, agent, next: w.range(good + 1, w.lastLsn) };
}

/** The processor refused on `s` with `code`, closed it, and neither the replica nor its position moved. */
async function expectRefused(s: TapSession, code: string, dataDir: string, before: Buffer[], good: number) {
  expect(await s.errorSent()).toMatchObject({ t: 'error', code });
  await s.closed;
  expectImages(await replicaBytes(dataDir, VM, DISKS), before);
  const { cs, processor } = cases.current();
  const st = await vmStatus(processor.listen, VM);
  expect(st.state).toBe('error');
  expect(st.errorCode).toBe(code);
  expect(st.error).toContain(code);
  expect(st.appliedLsn).toBe(good);
  expect(cs.tap.confirmed(VM)).toBe(good);
}

function withBadCrc(r: ChangeRecord): ChangeRecord {
  return { ...r, crc: (recordChecksum(r, r.data) ^ 0x1) >>> 0 };
}

/** A group record of `kind` at `lsn` carrying `payload` as is, with a checksum that matches it. */
function groupRecord(lsn: number, kind: RecordKind, payload: string): ChangeRecord {
  const data = Buffer.from(payload);
  const r = { lsn, kind, disk: 0, offset: 0, length: 0, data };
  return { ...r, crc: recordChecksum(r, data) };
}

/** Each damages one record in the middle of the batch, after good ones. */
const DAMAGED: { name: string; code: string; damage: (r: ChangeRecord) => ChangeRecord; at: number }[] = [
  { name: 'a bad checksum', code: 'SR_CHECKSUM', at: 10, damage: withBadCrc },
  {
    name: 'a write past the end of its disk',
    code: 'SR_BOUNDS',
    at: 10,
    damage: (r) => {
      const data = Buffer.alloc(8192, 0xee);
      const oob = { lsn: r.lsn, kind: RecordKind.WRITE, disk: 1, offset: DISKS[1]!.size - 4096, length: 8192, data };
      return { ...oob, crc: recordChecksum(oob, data) };
    },
  },
  {
    name: 'a disk the VM does not have',
    code: 'SR_BOUNDS',
    at: 5,
    damage: (r) => {
      const z = { lsn: r.lsn, kind: RecordKind.ZERO, disk: 7, offset: 0, length: 512 } as const;
      return { ...z, crc: recordChecksum(z, undefined) };
    },
  },
  {
    name: 'a group mark that names no round',
    code: 'SR_PROTOCOL',
    at: 10,
    damage: (r) => groupRecord(r.lsn, RecordKind.GROUP_MARK, '{"group":"shop","members":["web01"]}'),
  },
  {
    name: 'a group commit whose payload is not JSON',
    code: 'SR_PROTOCOL',
    at: 6,
    damage: (r) => groupRecord(r.lsn, RecordKind.GROUP_COMMIT, 'commit 1.2'),
  },
];

describe('processor refusing what the cache-store sends', () => {
  it.each(DAMAGED)(
    'refuses a stored batch with $name ($code): nothing of it reaches the replica, however often it comes',
    async ({ code, damage, at }) => {
      const { dataDir, cs } = await cases.start();
      const { good, agent, next } = await replicatedUpTo(cs, 777);
      const before = await replicaBytes(dataDir, VM, DISKS);
      // The cache-store stores batches without opening their records: the damage reaches the processor.
      await agent.store(next.map((r, i) => (i === at ? damage(r) : r)));
      await expectRefused(await cs.tap.session(0), code, dataDir, before, good);

      // Reconnected, the processor asks again from where it stood and refuses the same batch again.
      const s1 = await cs.tap.session(1);
      expect(await s1.subscribeOf(VM)).toMatchObject({ generation: 'g1', from: good + 1 });
      await expectRefused(s1, code, dataDir, before, good);
    },
  );

  it('refuses an LSN gap, then applies the records from exactly where the replica stood', async () => {
    const { dataDir, cs, processor } = await cases.start();
    const { w, good, agent, next } = await replicatedUpTo(cs, 778);
    const before = await replicaBytes(dataDir, VM, DISKS);
    // The cache-store refuses to store a gap, so only a forged frame can carry one: good+2.. without good+1.
    const s0 = await cs.tap.session(0);
    await s0.inject(await batchFrame(VM, 'g1', next.slice(1)));
    await expectRefused(s0, 'SR_SEQUENCE', dataDir, before, good);

    const s1 = await cs.tap.session(1);
    expect(await s1.subscribeOf(VM)).toMatchObject({ generation: 'g1', from: good + 1 });
    // A new stream is told at once what is already durable.
    await s1.waitFor(`LSN ${good} confirmed on the new stream`, (m) => m.t === 'applied' && m['lsn'] === good);
    await agent.store(next);
    await cs.tap.confirmedAtLeast(VM, w.lastLsn);
    expectImages(await replicaBytes(dataDir, VM, DISKS), w.images);
    const st = await vmStatus(processor.listen, VM);
    expect(st.state).not.toBe('error');
    expect(st.error).toBeUndefined();
    expect(st.lastError?.code).toBe('SR_SEQUENCE');
  });

  it.each([
    {
      what: 'a record damaged in transit',
      code: 'SR_CHECKSUM',
      frame: async (next: ChangeRecord[]) =>
        batchFrame(
          VM,
          'g1',
          next.map((r, i) => (i === 3 ? withBadCrc(r) : r)),
        ),
    },
    {
      what: 'a batch cut short in transit',
      code: 'SR_PROTOCOL',
      frame: async (next: ChangeRecord[]) => {
        const whole = await batchFrame(VM, 'g1', next);
        return whole.subarray(0, whole.length - 1000);
      },
    },
  ])('refuses $what ($code), applies nothing of it, and recovers by fetching the stream again', async (t) => {
    const { dataDir, cs } = await cases.start();
    const { w, good, agent, next } = await replicatedUpTo(cs, 779);
    const before = await replicaBytes(dataDir, VM, DISKS);
    const s0 = await cs.tap.session(0);
    await s0.inject(await t.frame(next));
    if (t.code === 'SR_CHECKSUM') await expectRefused(s0, t.code, dataDir, before, good);
    else {
      // A frame cut short names no VM the processor could blame: the connection alone is refused.
      expect(await s0.errorSent()).toMatchObject({ t: 'error', code: t.code });
      await s0.closed;
      expectImages(await replicaBytes(dataDir, VM, DISKS), before);
      expect(cs.tap.confirmed(VM)).toBe(good);
    }
    // The stored copy is whole: fetched again from where the replica stood, it lands.
    await agent.store(next);
    await cs.tap.confirmedAtLeast(VM, w.lastLsn);
    expectImages(await replicaBytes(dataDir, VM, DISKS), w.images);
  });

  // The real cache-store sends none of these: each is injected into an otherwise real stream.
  it('refuses malformed frames and messages out of turn with SR_PROTOCOL', async () => {
    const { cs } = await cases.start();
    const w = new Workload(DISKS, 4);
    w.random(5);
    const refused = async (s: TapSession, code = 'SR_PROTOCOL'): Promise<void> => {
      expect(await s.errorSent()).toMatchObject({ code });
      await s.closed;
    };

    // A batch before its stream was announced: listed by a forged VM list, the VM is not in the
    // cache-store, which therefore never streams it.
    const s0 = await cs.tap.session(0);
    await s0.waitForSent("the cache-store's VM list", (m) => m.t === 'vms');
    await s0.inject({ t: 'vms', vms: [{ vm: VM, generation: 'g1', disks: DISKS, firstLsn: 1, lastLsn: 5 }] });
    await s0.subscribeOf(VM);
    await s0.inject(await batchFrame(VM, 'g1', w.range(1, 5)));
    await refused(s0);

    const s1 = await cs.tap.session(1);
    await s1.inject(Buffer.from([0xc1, 0x00, 0xff]));
    await refused(s1);

    const s2 = await cs.tap.session(2);
    await s2.inject({ t: 'stream', vm: 'other-vm', generation: 'g1', disks: DISKS, from: 1 });
    await refused(s2);

    // Now the VM's stream is real; forged batches follow its announcement.
    const agent = await cs.agent(VM, 'g1', DISKS);
    await agent.store(w.range(1, 5));
    const announced = (s: TapSession): Promise<unknown> =>
      s.waitForSent(`the stream of ${VM}`, (m) => m.t === 'stream' && m['vm'] === VM);

    // A batch of another generation than its stream's.
    const s3 = await cs.tap.session(3);
    await announced(s3);
    await s3.inject(await batchFrame(VM, 'g2', w.range(1, 5)));
    await refused(s3, 'SR_GENERATION');

    // A batch whose record table does not match its count.
    const s4 = await cs.tap.session(4);
    await announced(s4);
    await s4.inject({
      t: 'batch',
      vm: VM,
      generation: 'g1',
      first: 6,
      count: 3,
      recs: Buffer.alloc(40),
      codec: 'none',
      raw: 0,
      data: Buffer.alloc(0),
    });
    await refused(s4);
  });

  it('reports a cache-store error in status and reconnects', async () => {
    const { cs, processor } = await cases.start();
    const s0 = await cs.tap.session(0);
    await s0.waitFor("the processor's hello", (m) => m.t === 'hello');
    // The cache-store checks no credential yet (cache-store/src/net/auth.ts): a forged refusal stands in.
    await s0.inject({ t: 'error', code: 'SR_AUTH', message: 'credential refused' });
    s0.injectClose(1008, 'auth');
    const s1 = await cs.tap.session(1);
    await s1.waitFor("the processor's hello", (m) => m.t === 'hello');
    const status = await getJson<{ cacheStore: { lastError?: { code: string }; reconnects: number } }>(
      processor.listen,
      '/status',
    );
    expect(status.cacheStore.lastError?.code).toBe('SR_AUTH');
    expect(status.cacheStore.reconnects).toBeGreaterThanOrEqual(1);
  });
});
