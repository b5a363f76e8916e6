import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { RecordKind, type ChangeRecord, type Sums, type SumsEnd } from '@site-recovery/shared';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { FileJournal } from '../../src/journal/file-journal.js';
import { Shipper, type ShipperLimits } from '../../src/replication/shipper.js';
import { ScriptedCacheStore } from './scripted-cache-store.js';

// The shipper against a scripted cache-store (see scripted-cache-store.ts for why not the real one),
// reading a real FileJournal in a temp dir.

const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'sr-shipper-'));
afterAll(() => fsp.rm(root, { recursive: true, force: true }));

const RECORD_BYTES = 4096;
const DISKS = [{ id: 'disk0', size: 64 * 1024 * 1024 }];
/** Reconnects fast enough not to slow the tests. */
const FAST: Partial<ShipperLimits> = { reconnectMinMs: 5, reconnectMaxMs: 50 };

interface LogLine {
  level: number;
  msg: string;
  err?: string;
}

interface Rig {
  store: ScriptedCacheStore;
  journal: FileJournal;
  shipper: Shipper;
  /** Every value passed to onAcked, in order. */
  acked: number[];
  /** Settles once every release the acks started has. */
  released: () => Promise<void>;
  logs: LogLine[];
  confirmed: number;
  /** Sums messages handed over (onSums), and how often the sums request went out. */
  sums: (Sums | SumsEnd)[];
  sumsRequestsSent: number;
  /** Payloads appended, by LSN. */
  written: Map<number, Buffer>;
  append: (n: number) => Promise<void>;
}

const open: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of open.splice(0).reverse()) await close();
});

/**
 * A journal of `records` 4 KiB random writes, a scripted cache-store, and a started shipper whose
 * onAcked releases the journal as agent.ts does: through the lower of the ack and the checkpoint.
 */
async function rig(
  name: string,
  o: {
    records: number;
    segmentBytes?: number;
    checkpoint?: () => number;
    startLsn?: number;
    limits?: Partial<ShipperLimits>;
    inFlightCap?: number;
    beforeStart?: (j: FileJournal) => Promise<void>;
  },
): Promise<Rig> {
  const journal = await FileJournal.open(path.join(root, name), { segmentBytes: o.segmentBytes ?? 1024 * 1024 });
  const store = await ScriptedCacheStore.start(o.inFlightCap);
  const written = new Map<number, Buffer>();
  const append = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const lsn = journal.lastLsn + 1;
      const data = randomBytes(RECORD_BYTES);
      written.set(lsn, data);
      const r: ChangeRecord = {
        lsn,
        kind: RecordKind.WRITE,
        disk: 0,
        offset: (lsn % 1000) * RECORD_BYTES,
        length: RECORD_BYTES,
        data,
      };
      await journal.append(r);
    }
  };
  await append(o.records);
  await o.beforeStart?.(journal);
  const logs: LogLine[] = [];
  const releases: Promise<void>[] = [];
  const checkpoint = o.checkpoint ?? (() => journal.lastLsn);
  const r: Rig = {
    store,
    journal,
    acked: [],
    released: async () => void (await Promise.all(releases)),
    logs,
    confirmed: 0,
    sums: [],
    sumsRequestsSent: 0,
    written,
    append,
    shipper: new Shipper({
      url: store.url,
      vm: 'vm-1',
      generation: 'gen-1',
      disks: DISKS,
      journal,
      log: pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) }),
      ...(o.startLsn !== undefined ? { startLsn: o.startLsn } : {}),
      limits: { ...FAST, ...o.limits },
      onAcked: (lsn) => {
        r.acked.push(lsn);
        releases.push(journal.releaseThrough(Math.min(lsn, checkpoint())));
      },
      onPositionConfirmed: () => void r.confirmed++,
      onSums: (m) => void r.sums.push(m),
      onSumsRequestSent: () => void r.sumsRequestsSent++,
    }),
  };
  open.push(async () => {
    await r.shipper.stop();
    await store.close();
    await journal.close();
  });
  r.shipper.start();
  return r;
}

describe('Shipper', () => {
  it('ships the journal from the welcome position in LSN order, every record intact, and follows it as it grows', async () => {
    const r = await rig('order', { records: 40, limits: { batchBytes: 16 * 1024 } });
    const c = await r.store.connection(0);
    expect(c.hello).toMatchObject({
      role: 'agent',
      vm: 'vm-1',
      generation: 'gen-1',
      disks: DISKS,
    });
    c.welcome(0);
    await r.store.until('LSN 40 to arrive', () => c.lastLsn === 40);
    await r.append(10);
    await r.store.until('LSN 50, appended while connected, to arrive', () => c.lastLsn === 50);

    // The scripted store checked order and checksums on arrival; here: several batches, each payload as written.
    expect(c.batches.length).toBeGreaterThan(2);
    const records = c.batches.flatMap((b) => b.records);
    expect(records.map((x) => x.lsn)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    for (const x of records) expect(x.data!.equals(r.written.get(x.lsn)!), `payload of LSN ${x.lsn}`).toBe(true);
    expect(r.confirmed).toBe(1);
    expect(r.shipper.status()).toMatchObject({ state: 'streaming', sentLsn: 50, ackedLsn: 0 });
  });

  it('reports a cumulative ack once the cache-store sends it, and the journal goes only through the checkpoint', async () => {
    // About three records per segment, so releases are visible in firstLsn.
    const r = await rig('ack', { records: 30, segmentBytes: 12 * 1024, checkpoint: () => 12 });
    const c = await r.store.connection(0);
    c.welcome(0);
    await r.store.until('LSN 30 to arrive', () => c.lastLsn === 30);
    await r.released();
    expect(r.acked).toEqual([0]); // the welcome's position: nothing held yet, nothing released
    expect(r.journal.firstLsn).toBe(1);

    const ack = c.batches.find((b) => b.last >= 20)!.last;
    c.ack(ack);
    await r.store.until(`the shipper to report the ack of LSN ${ack}`, () => r.acked.includes(ack));
    await r.released();
    const status = r.shipper.status();
    expect(status.ackedLsn).toBe(ack);
    expect(status.inFlightBytes).toBe(c.unackedBytes);
    // The cache-store holds through `ack`, the images only through 12: segments wholly at or below 12 go.
    expect(r.journal.firstLsn).toBeGreaterThan(1);
    expect(r.journal.firstLsn).toBeLessThanOrEqual(13);
  });

  it('refuses an ack past what it shipped: SR_PROTOCOL, the connection closes, nothing is released, and it reconnects', async () => {
    const r = await rig('forged', { records: 10, segmentBytes: 12 * 1024 });
    const c = await r.store.connection(0);
    c.welcome(0);
    await r.store.until('LSN 10 to arrive', () => c.lastLsn === 10);
    c.ack(11);
    await r.store.until('the shipper to close the connection after an ack of LSN 11', () => c.closed);

    const error = r.shipper.status().lastError ?? '';
    expect(error).toMatch(/^SR_PROTOCOL: /);
    expect(error).toContain('LSN 11');
    expect(error).toContain('LSN 10');
    expect(r.logs.some((l) => l.level >= 40 && l.err === error)).toBe(true);
    await r.released();
    expect(r.acked).toEqual([0]);
    expect(r.shipper.status().ackedLsn).toBe(0);
    expect(r.journal.firstLsn).toBe(1);

    // It dials again and, with nothing released, ships everything to a cache-store that holds nothing.
    const again = await r.store.connection(1);
    again.welcome(0);
    await r.store.until('LSN 10 to arrive again', () => again.lastLsn === 10);
    expect(again.batches[0]!.first).toBe(1);
    expect(r.shipper.status()).toMatchObject({ state: 'streaming', reconnects: 1 });
    // A true ack releases: the journal was only ever kept by the refusal.
    again.ack(10);
    await r.store.until('the shipper to report the ack of LSN 10', () => r.acked.includes(10));
    await r.released();
    expect(r.journal.firstLsn).toBeGreaterThan(1);
  });

  it('refuses an ack that goes back, and keeps the earlier one', async () => {
    const r = await rig('backwards', { records: 10 });
    const c = await r.store.connection(0);
    c.welcome(0);
    await r.store.until('LSN 10 to arrive', () => c.lastLsn === 10);
    c.ack(8);
    await r.store.until('the shipper to report the ack of LSN 8', () => r.acked.includes(8));
    c.ack(5);
    await r.store.until('the shipper to close the connection after an ack of LSN 5', () => c.closed);
    const error = r.shipper.status().lastError ?? '';
    expect(error).toMatch(/^SR_PROTOCOL: .*LSN 5 .*LSN 8/);
    expect(r.acked).toEqual([0, 8]);
  });

  it("resumes each new connection from the cache-store's durable LSN, also one below an earlier ack", async () => {
    const r = await rig('resume', { records: 30, limits: { batchBytes: 16 * 1024 } });
    const first = await r.store.connection(0);
    first.welcome(0);
    await r.store.until('LSN 30 to arrive', () => first.lastLsn === 30);
    first.ack(10);
    await r.store.until('the shipper to report the ack of LSN 10', () => r.acked.includes(10));
    first.terminate();

    const second = await r.store.connection(1);
    second.welcome(20);
    await r.store.until('LSN 30 to arrive on the second connection', () => second.lastLsn === 30);
    expect(second.batches[0]!.first).toBe(21);
    expect(r.acked.at(-1)).toBe(20);
    second.terminate();

    // A cache-store that lost records it had acknowledged: the agent must not count them as held.
    const third = await r.store.connection(2);
    third.welcome(5);
    await r.store.until('LSN 30 to arrive on the third connection', () => third.lastLsn === 30);
    expect(third.batches[0]!.first).toBe(6);
    expect(r.acked.at(-1)).toBe(5);
    expect(r.shipper.status().ackedLsn).toBe(5);
    expect(r.logs.some((l) => l.level === 40 && /holds less than it acknowledged/.test(l.msg))).toBe(true);
  });

  it('never has more than inFlightBytes unacknowledged, also across a reconnect', async () => {
    const cap = 40 * 1024;
    const batchBytes = 16 * 1024;
    const r = await rig('window', { records: 80, limits: { batchBytes, inFlightBytes: cap }, inFlightCap: cap });
    const { store, shipper } = r;

    /** Waits until the shipper has sent past `after` and waits for acks with all it sent arrived. */
    const fill = async (c: Awaited<ReturnType<typeof store.connection>>, after: number): Promise<void> => {
      await store.until(`the shipper to fill its window past LSN ${after}`, () => {
        const s = shipper.status();
        return s.windowFull && s.sentLsn > after && c.lastLsn === s.sentLsn;
      });
      // The scripted store checked the cap at every arrival; here: the window was used, not just respected.
      expect(c.unackedBytes).toBe(shipper.status().inFlightBytes);
      expect(c.unackedBytes).toBeGreaterThan(cap - batchBytes - 2048);
    };

    const first = await store.connection(0);
    first.welcome(0);
    await fill(first, 0);
    const ack = first.lastLsn;
    first.ack(ack);
    await fill(first, ack);
    // Everything it holds counts as durable at the next welcome; its bytes must leave the window.
    const durable = first.lastLsn;
    first.terminate();

    const second = await store.connection(1);
    second.welcome(durable);
    await fill(second, durable);
    while (second.lastLsn < 80) {
      const at = second.lastLsn;
      second.ack(at);
      await store.until(`LSN ${at + 1} onward after the ack of LSN ${at}`, () => second.lastLsn > at);
    }
    expect(store.violations).toEqual([]);
  });

  it.each([
    { case: 'past the journal', records: 10, welcome: 13, expected: /LSN 13 .*reached only LSN 10/ },
    { case: 'past where it ended at start', records: 10, startLsn: 5, welcome: 8, expected: /reached only LSN 5/ },
    { case: 'below what it still holds', records: 30, release: 12, welcome: 2, expected: /starts at LSN/ },
  ])(
    'refuses a cache-store position $case with SR_SEQUENCE, and reports it',
    async ({ records, welcome, startLsn, release, expected }) => {
      const r = await rig(`sequence-${welcome}`, {
        records,
        segmentBytes: 12 * 1024,
        ...(startLsn !== undefined ? { startLsn } : {}),
        ...(release !== undefined ? { beforeStart: (j: FileJournal) => j.releaseThrough(release) } : {}),
      });
      if (release !== undefined) expect(r.journal.firstLsn).toBeGreaterThan(welcome + 1);
      const c = await r.store.connection(0);
      c.welcome(welcome);
      await r.store.until('the shipper to close the connection after the welcome', () => c.closed);
      const status = r.shipper.status();
      expect(status.state).toBe('failed');
      expect(status.lastError).toMatch(/^SR_SEQUENCE: /);
      expect(status.lastError).toMatch(expected);
      expect(status.lastError).toContain('--resync');
      expect(r.logs.some((l) => l.level === 50 && l.msg === status.lastError)).toBe(true);
      expect(r.acked).toEqual([]);
      expect(r.confirmed).toBe(0);
      expect(c.batches).toEqual([]);
    },
  );

  it('sends the sums request after each welcome until it is cleared, and hands over the sums of its own generation', async () => {
    const r = await rig('sums', { records: 0 });
    const request = {
      t: 'sums-request',
      vm: 'vm-1',
      generation: 'gen-1',
      blockBytes: 4096,
      algo: 'xxh128',
    } as const;
    r.shipper.requestSums(request); // before any welcome: it waits for one
    const c0 = await r.store.connection(0);
    c0.welcome(0);
    await r.store.until('the request on the first connection', () => c0.sumsRequests.length === 1);
    expect(c0.sumsRequests[0]).toEqual(request);
    const sums = { t: 'sums', vm: 'vm-1', disk: 0, first: 0, blockBytes: 4096, sums: Buffer.alloc(32, 7) };
    c0.send({ ...sums, generation: 'gen-0' }); // an older generation's answer: not for this copy
    c0.send({ ...sums, generation: 'gen-1' });
    c0.send({ t: 'sums-end', vm: 'vm-1', generation: 'gen-1', blockBytes: 4096, available: true });
    await r.store.until('the answer to be handed over', () => r.sums.length === 2);
    expect(r.sums.map((m) => [m.t, m.generation])).toEqual([
      ['sums', 'gen-1'],
      ['sums-end', 'gen-1'],
    ]);
    // A connection lost mid-answer: the next one asks again.
    c0.terminate();
    const c1 = await r.store.connection(1);
    c1.welcome(0);
    await r.store.until('the request on the second connection', () => c1.sumsRequests.length === 1);
    r.shipper.requestSums(undefined);
    c1.terminate();
    const c2 = await r.store.connection(2);
    c2.welcome(0);
    await r.append(1);
    await r.store.until('the record on the third connection', () => c2.lastLsn === 1);
    expect(c2.sumsRequests).toEqual([]);
    expect(r.sumsRequestsSent).toBe(2);
  });
});
