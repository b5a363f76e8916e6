import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, waitUntil } from '@site-recovery/test';
import { GroupCode } from '../../src/group/group-codes.js';
import { GROUP, SECRET, loopbackPeers, roundsOf, startMember, type TestMember } from './group-fixture.js';
import { RawPeer } from './raw-peer.js';

// The group port refuses anyone who does not prove the group secret, does not belong to the group,
// or sends an authenticated frame twice, and such a peer never gets a member to hold its writes.
// The test speaks to member "b" from a raw socket; "a" sorts first, so it is the one that dials b.

let t: { dir: string; cleanup: () => Promise<void> };
let b: TestMember;
let port: number;
const open: RawPeer[] = [];

beforeAll(async () => {
  t = await tempDir('group-auth');
  // c never runs: b only has to accept a's dials here.
  const peers = await loopbackPeers(['a', 'b', 'c']);
  port = peers[1]!.port;
  // Rounds of b's own would need c; a long frequency keeps b from coordinating anything meanwhile.
  b = await startMember(t.dir, 'b', { peers, frequencyMs: 3_600_000, holdTimeoutMs: 300 });
});
afterEach(() => {
  for (const p of open.splice(0)) p.socket.destroy();
});
afterAll(async () => {
  await b?.close();
  await t?.cleanup();
});

async function raw(): Promise<RawPeer> {
  const p = await RawPeer.connect(port);
  open.push(p);
  return p;
}

/** What b counted and logged for a refused peer, once the connection is closed. */
async function refusedWith(p: RawPeer, code: string, before: number): Promise<void> {
  await p.closed;
  const failures = await waitUntil(
    `b to count the refusal ${code}`,
    () => {
      const f = b.group.status().authFailures;
      return f.count > before ? f : undefined;
    },
    5000,
    20,
  );
  expect(failures.count).toBe(before + 1);
  expect(failures.last?.code).toBe(code);
  expect(b.log.withCode(code).length, `b logs ${code}`).toBeGreaterThan(0);
  expect(b.gate.holding, 'b holds writes after a refused peer').toBe(false);
}

const count = (): number => b.group.status().authFailures.count;

const prepare = (round: string, term: number): object => ({
  t: 'prepare',
  term,
  mark: { group: GROUP, round, coordinator: 'a', members: ['a', 'b', 'c'], time: Date.now() },
});

describe('group peer authentication', () => {
  it('refuses a peer with the wrong secret at its proof', async () => {
    const before = count();
    const p = await raw();
    expect(await p.handshake({ group: GROUP, from: 'a', to: 'b', secret: randomBytes(32) })).toBe('closed');
    await refusedWith(p, GroupCode.AUTH, before);
  });

  it('refuses a VM that is not among its peers, before any challenge', async () => {
    const before = count();
    const p = await raw();
    p.frame({ t: 'hello', v: 1, group: GROUP, from: 'intruder', to: 'b', nonce: randomBytes(32).toString('hex') });
    expect(await p.next()).toBeUndefined();
    await refusedWith(p, GroupCode.UNKNOWN_PEER, before);
  });

  it('refuses a member of another group', async () => {
    const before = count();
    const p = await raw();
    p.frame({ t: 'hello', v: 1, group: 'other', from: 'a', to: 'b', nonce: randomBytes(32).toString('hex') });
    expect(await p.next()).toBeUndefined();
    await refusedWith(p, GroupCode.WRONG_GROUP, before);
  });

  it('accepts nothing but the handshake before it completes', async () => {
    const before = count();
    const p = await raw();
    p.frame(prepare('1.1', 1));
    expect(await p.next()).toBeUndefined();
    await refusedWith(p, GroupCode.PROTOCOL, before);
    expect(await roundsOf(b.journal, 'mark')).not.toContain('1.1');
  });

  it('drops a peer whose frame before authentication is over 4 KiB, without reading it', async () => {
    const before = count();
    const p = await raw();
    const header = Buffer.alloc(4);
    header.writeUInt32BE(4097, 0);
    p.write(header); // the length alone is enough to refuse it
    expect(await p.next()).toBeUndefined();
    await refusedWith(p, GroupCode.LIMIT, before);
  });

  it('refuses a captured PREPARE replayed on the same connection, and on a new one', async () => {
    const p = await raw();
    expect(await p.handshake({ group: GROUP, from: 'a', to: 'b', secret: SECRET })).toBe('up');
    // A genuine round from "a": b marks, holds, answers READY; the ABORT releases it.
    const captured = p.sendSealed(prepare('7.1', 7));
    expect(await p.nextOf('ready')).toMatchObject({ round: '7.1' });
    expect(b.gate.holding).toBe(true);
    p.sendSealed({ t: 'abort', round: '7.1', code: 'SR_GROUP_TIMEOUT', reason: 'test' });
    await waitUntil('b to release after the ABORT', () => (b.gate.holding ? undefined : true), 5000, 10);
    const marks = (await roundsOf(b.journal, 'mark')).length;

    let before = count();
    p.write(captured);
    await refusedWith(p, GroupCode.REPLAY, before);

    // Same bytes on a new, properly authenticated connection: other nonces, other session keys.
    const q = await raw();
    expect(await q.handshake({ group: GROUP, from: 'a', to: 'b', secret: SECRET })).toBe('up');
    before = count();
    q.write(captured);
    await refusedWith(q, GroupCode.AUTH, before);

    expect((await roundsOf(b.journal, 'mark')).length, 'marks after the replays').toBe(marks);
    expect(await roundsOf(b.journal, 'abort')).toContain('7.1');
    expect(await roundsOf(b.journal, 'commit')).not.toContain('7.1');
  });

  it('refuses a second hold while one is in force, and releases the first at its timeout', async () => {
    const p = await raw();
    expect(await p.handshake({ group: GROUP, from: 'a', to: 'b', secret: SECRET })).toBe('up');
    p.sendSealed(prepare('9.1', 9));
    expect(await p.nextOf('ready')).toMatchObject({ round: '9.1' });
    p.sendSealed(prepare('9.2', 9));
    expect(await p.nextOf('refused')).toMatchObject({ round: '9.2', code: GroupCode.BUSY });
    // The coordinator falls silent: b lets go by itself.
    await waitUntil('b to release at its hold timeout', () => (b.gate.holding ? undefined : true), 5000, 10);
    const records = await roundsOf(b.journal, 'abort');
    expect(records).toContain('9.1');
    expect(b.group.status().lastFailure).toMatchObject({ round: '9.1', code: GroupCode.TIMEOUT });
    // A COMMIT that comes too late changes nothing.
    p.sendSealed({ t: 'commit', round: '9.1' });
    p.sendSealed({ t: 'hb', term: 9 });
    await waitUntil(
      'b to log the late COMMIT',
      () => (b.log.lines.some((l) => l['round'] === '9.1' && /late/.test(String(l['msg']))) ? true : undefined),
      5000,
      10,
    );
    expect(await roundsOf(b.journal, 'commit')).not.toContain('9.1');
  });

  it('refuses a PREPARE whose term is below the highest it has seen', async () => {
    const p = await raw();
    expect(await p.handshake({ group: GROUP, from: 'a', to: 'b', secret: SECRET })).toBe('up');
    p.sendSealed(prepare('3.1', 3));
    expect(await p.nextOf('refused')).toMatchObject({ round: '3.1', code: GroupCode.STALE_TERM, term: 9 });
    expect(b.gate.holding).toBe(false);
  });
});
