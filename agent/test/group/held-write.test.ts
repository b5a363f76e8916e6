import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordKind, type GroupMark } from '@site-recovery/shared';
import { makeImage, tempDir } from '@site-recovery/test';
import { CaptureBackend, LsnSequence } from '../../src/backend/capture-filter.js';
import { FileBackend } from '../../src/backend/file-backend.js';
import { GroupCode } from '../../src/group/group-codes.js';
import { GroupMember } from '../../src/group/group-member.js';
import { GroupStats } from '../../src/group/group-stats.js';
import { TermStore } from '../../src/group/term-store.js';
import { WriteGate } from '../../src/group/write-gate.js';
import { FileJournal } from '../../src/journal/file-journal.js';
import { LogLines } from './group-fixture.js';

// What the guest sees of a barrier: the reply of a write issued after the mark waits for the COMMIT
// (or the hold timeout), while the write itself is already in the journal and the image; a write
// that took its LSN before the mark is answered as usual.

let t: { dir: string; cleanup: () => Promise<void> };
let journal: FileJournal;
let capture: CaptureBackend;
let member: GroupMember;
let gate: WriteGate;
const HOLD_TIMEOUT_MS = 500;

beforeAll(async () => {
  t = await tempDir('group-held-write');
  const image = path.join(t.dir, 'a.img');
  await makeImage(image, 16 << 20);
  journal = await FileJournal.open(path.join(t.dir, 'journal'));
  const lsns = new LsnSequence(journal.lastLsn);
  gate = new WriteGate();
  capture = new CaptureBackend(FileBackend.open(image), { disk: 0, lsns, journal, gate });
  const log = new LogLines().logger;
  member = new GroupMember({
    group: 'shop',
    vm: 'a',
    journal,
    lsns,
    gate,
    terms: await TermStore.open(t.dir, log),
    holdTimeoutMs: HOLD_TIMEOUT_MS,
    stats: new GroupStats(100),
    log,
  });
});
afterAll(async () => {
  member?.close();
  await capture?.close();
  await journal?.close();
  await t?.cleanup();
});

const mark = (round: string): GroupMark => ({
  group: 'shop',
  round,
  coordinator: 'a',
  members: ['a', 'b'],
  time: Date.now(),
});

async function kinds(): Promise<number[]> {
  const out: number[] = [];
  for await (const r of journal.read(journal.firstLsn)) out.push(r.kind);
  return out;
}

describe('a write during a barrier', () => {
  it('is answered only at the COMMIT when issued after the mark; one issued before is not held', async () => {
    const before = capture.write(0, Buffer.alloc(4096, 1), false); // takes its LSN now, before the mark
    expect(member.prepare('a', 1, mark('1.1'))).toBeUndefined();
    await before;
    expect(gate.holding, 'the hold is still in force').toBe(true);

    let answered = false;
    const after = capture.write(4096, Buffer.alloc(4096, 2), false).then(() => (answered = true));
    await capture.drained(); // the write is in the image: only its reply waits
    expect(await capture.read(4096, 4096)).toEqual(Buffer.alloc(4096, 2));
    expect(await kinds()).toEqual([RecordKind.WRITE, RecordKind.GROUP_MARK, RecordKind.WRITE]);
    expect(answered, 'the reply of a write after the mark went out before the COMMIT').toBe(false);

    member.commit('a', '1.1');
    await after;
    expect(gate.holding).toBe(false);
    expect(await kinds()).toEqual([RecordKind.WRITE, RecordKind.GROUP_MARK, RecordKind.WRITE, RecordKind.GROUP_COMMIT]);
  });

  it('is released with an ABORT in the journal when no COMMIT comes within the hold timeout', async () => {
    const start = (await kinds()).length;
    expect(member.prepare('a', 2, mark('2.1'))).toBeUndefined();
    let answered = false;
    const held = capture.write(8192, Buffer.alloc(4096, 3), false).then(() => (answered = true));
    await capture.drained();
    expect(answered).toBe(false);
    await held;
    expect(gate.holding).toBe(false);
    expect((await kinds()).slice(start)).toEqual([RecordKind.GROUP_MARK, RecordKind.WRITE, RecordKind.GROUP_ABORT]);
    // The COMMIT that comes after the timeout is too late: nothing more is journaled.
    member.commit('a', '2.1');
    await journal.sync(); // anything the late COMMIT appended would be written by now
    expect((await kinds()).length).toBe(start + 3);
    const aborts = [];
    for await (const r of journal.read(journal.firstLsn))
      if (r.kind === RecordKind.GROUP_ABORT) aborts.push(JSON.parse(Buffer.from(r.data!).toString()) as object);
    expect(aborts).toEqual([expect.objectContaining({ round: '2.1', code: GroupCode.TIMEOUT })]);
  });

  it('is released at the last READY of the other members, a hop before the coordinator’s COMMIT', async () => {
    // c coordinates a round of a, b and c: c's PREPARE stands for its READY, so a waits for b's only.
    const round = (id: string): GroupMark => ({ ...mark(id), coordinator: 'c', members: ['a', 'b', 'c'] });
    const start = (await kinds()).length;
    expect(member.prepare('c', 3, round('3.1'))).toBeUndefined();
    let answered = false;
    const held = capture.write(12288, Buffer.alloc(4096, 4), false).then(() => (answered = true));
    await capture.drained();
    member.ready('x', '3.1'); // not a member of the round: counts for nothing
    member.ready('c', '3.1'); // the coordinator's READY was its PREPARE already
    await journal.sync();
    expect(answered, 'released before every member was READY').toBe(false);
    member.ready('b', '3.1');
    await held;
    expect((await kinds()).slice(start)).toEqual([RecordKind.GROUP_MARK, RecordKind.WRITE, RecordKind.GROUP_COMMIT]);
    member.commit('c', '3.1'); // the coordinator's COMMIT, now redundant, journals nothing more
    await journal.sync();
    expect((await kinds()).length).toBe(start + 3);

    // b's READY may arrive before c's PREPARE (b nearer than c): kept, and the PREPARE commits at once.
    member.ready('b', '3.2');
    expect(member.prepare('c', 3, round('3.2'))).toBeUndefined();
    expect(gate.holding).toBe(false);
    expect((await kinds()).slice(start + 3)).toEqual([RecordKind.GROUP_MARK, RecordKind.GROUP_COMMIT]);
  });
});
