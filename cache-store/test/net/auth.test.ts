import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PROCESSOR_HELLO, agentHello, batches, eventually, type Peer } from '../helpers.js';
import { Refused, captureLog, mint, newSecret, openPeer, proofFor, refusal, snapshot } from './auth-fixture.js';
import { expectError, receiveThrough, useServers, type RunningServer } from './server-harness.js';

const { server, connect, agent, processor } = useServers();
const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-auth-'));
afterAll(() => fs.rm(tmp, { recursive: true, force: true }));

/** vm1 generation g1 with `n` acked batches of 4 records, its agent gone; returns the frames sent. */
async function storedStream(s: RunningServer, n = 3): Promise<Buffer[]> {
  const { peer } = await agent(s, 'vm1', 'g1');
  const sent = await batches('vm1', 'g1', 1, n);
  for (const b of sent) peer.send(b.frame);
  await peer.ackedThrough(4 * n);
  peer.close();
  await peer.closed;
  await eventually(async () => (await s.status()).vms[0]?.['agentConnected'] === false, 10_000, 'agent gone');
  return sent.map((b) => b.frame);
}

const sameFrames = (a: Buffer[], b: Buffer[]): boolean => a.length === b.length && a.every((f, i) => f.equals(b[i]!));

/** A peer on `s` with a fresh proof of an agent token for `vm`, or of a processor token. */
async function peerWith(s: RunningServer, spec: { role: 'agent' | 'processor'; vm?: string }): Promise<Peer> {
  return connect(s, { token: mint(s.secret!, spec) });
}

describe('cache-store authentication at the WebSocket upgrade', () => {
  it('refuses no credential, garbage, a wrong secret, an expired token, another role: HTTP 401/403 before any frame, each logged once', async () => {
    const { log, lines } = captureLog();
    const secret = newSecret();
    const s = await server({ auth: { secret }, log });
    const cases: [string, Record<string, string>, number, RegExp][] = [
      ['no header', {}, 401, /no credential/],
      ['garbage', { 'x-sr-auth': 'not a token at all' }, 401, /not a site-recovery credential/],
      [
        'wrong secret',
        proofFor(mint(newSecret(), { role: 'agent', vm: 'vm1' }), s.url),
        401,
        /not valid here \(wrong secret/,
      ],
      ['expired', proofFor(mint(secret, { role: 'agent', vm: 'vm1', expiresInS: -1 }), s.url), 401, /expired/],
      ['operator', proofFor(mint(secret, { role: 'operator' }), s.url), 403, /operator credential .* may not/],
      [
        'proof for another host',
        proofFor(mint(secret, { role: 'processor' }), 'ws://10.1.1.1:7400/'),
        401,
        /not valid/,
      ],
    ];
    for (const [what, headers, status, message] of cases) {
      const r = await refusal(s.url, { headers });
      expect({ what, status: r.status, code: r.body.code }).toEqual({ what, status, code: 'SR_AUTH' });
      expect(r.body.message).toMatch(message);
    }
    const refused = lines().filter((l) => l['msg'] === 'upgrade refused');
    expect(refused.map((l) => [l['code'], l['status']])).toEqual(cases.map(([, , st]) => ['SR_AUTH', st]));
    // Nothing of a credential is logged: the proofs' MACs and the secret appear nowhere.
    const logged = JSON.stringify(lines());
    for (const [, headers] of cases) if (headers['x-sr-auth']) expect(logged).not.toContain(headers['x-sr-auth']);
    expect(await s.status()).toMatchObject({ vms: [], trackedVms: 0, authentication: true });
  });

  it('refuses a replayed upgrade: the same proof works once', async () => {
    const s = await server({ auth: { secret: newSecret() } });
    const headers = proofFor(mint(s.secret!, { role: 'processor' }), s.url);
    const first = await openPeer(s.url, { headers });
    first.send(PROCESSOR_HELLO);
    await first.expect('vms');
    const again = await refusal(s.url, { headers });
    expect(again).toMatchObject({ status: 401, body: { code: 'SR_AUTH' } });
    expect(again.body.message).toMatch(/replayed/);
    first.close();
  });

  it('refuses a token from the moment its id is added to the revocation file, without a restart', async () => {
    const revoked = path.join(tmp, 'revoked-1');
    await fs.writeFile(revoked, '# ids refused\n');
    const s = await server({ auth: { secret: newSecret(), revokedTokensFile: revoked } });
    const token = mint(s.secret!, { role: 'agent', vm: 'vm1', id: 'web01-2024' });
    const ok = await connect(s, { token });
    ok.send(agentHello('vm1', 'g1'));
    await ok.expect('welcome');
    await fs.appendFile(revoked, 'web01-2024\n');
    const refusedAsRevoked = async (): Promise<boolean> => {
      try {
        (await openPeer(s.url, { headers: proofFor(token, s.url) })).close();
        return false;
      } catch (err) {
        return err instanceof Refused && err.status === 401 && /revoked/.test(err.body.message ?? '');
      }
    };
    await eventually(refusedAsRevoked, 15_000, 'the revoked token refused');
    // The session it opened before is ended too, with the code, not only the next upgrades.
    const err = await ok.expect('error', 15_000);
    expect(err.code).toBe('SR_AUTH');
    expect(err.message).toMatch(/web01-2024 is revoked/);
    expect((await ok.closed).code).toBe(1008);
    // Another token of the same VM is unaffected.
    await peerWith(s, { role: 'agent', vm: 'vm1' });
  });

  it('ends a session when its token expires, and leaves the sessions of valid tokens open', async () => {
    const s = await server({ auth: { secret: newSecret() } });
    const short = await connect(s, { token: mint(s.secret!, { role: 'agent', vm: 'vm1', expiresInS: 2 }) });
    short.send(agentHello('vm1', 'g1'));
    await short.expect('welcome');
    const { peer: lasting } = await processor(s);
    const err = await short.expect('error', 15_000);
    expect(err.code).toBe('SR_AUTH');
    expect(err.message).toMatch(/has expired/);
    expect((await short.closed).code).toBe(1008);
    lasting.send({ t: 'subscribe', vm: 'vm1', generation: 'g1', from: 1 });
    await lasting.expect('stream');
  });

  it('takes the right tokens: an agent streams its own VM, the processor reads it', async () => {
    const s = await server({ auth: { secret: newSecret() } });
    const sent = await storedStream(s, 2);
    const { peer } = await processor(s);
    peer.send({ t: 'subscribe', vm: 'vm1', generation: 'g1', from: 1 });
    await peer.expect('stream');
    expect(sameFrames(await receiveThrough(peer, 8), sent)).toBe(true);
  });
});

describe('the hello must agree with the token', () => {
  it('an agent token of another VM starts no generation and touches no stored stream (byte for byte)', async () => {
    const s = await server({ auth: { secret: newSecret() } });
    const sent = await storedStream(s);
    const before = await snapshot(s.dataDir);
    for (const generation of ['g2', 'g1']) {
      const rogue = await peerWith(s, { role: 'agent', vm: 'vm2' });
      rogue.send(agentHello('vm1', generation));
      expect(await expectError(rogue, 'SR_AUTH')).toMatch(/is for VM "vm2", not "vm1"/);
    }
    expect(await snapshot(s.dataDir)).toEqual(before);
    expect((await s.status()).vms).toMatchObject([{ vm: 'vm1', generation: 'g1', durableLsn: 12 }]);
    // The real agent resumes where it was, and the processor reads the same records.
    const { durableLsn } = await agent(s, 'vm1', 'g1');
    expect(durableLsn).toBe(12);
    const { peer } = await processor(s);
    peer.send({ t: 'subscribe', vm: 'vm1', generation: 'g1', from: 1 });
    await peer.expect('stream');
    expect(sameFrames(await receiveThrough(peer, 12), sent)).toBe(true);
  });

  it('a processor token cannot write: its agent hello is refused and nothing changes', async () => {
    const s = await server({ auth: { secret: newSecret() } });
    await storedStream(s);
    const before = await snapshot(s.dataDir);
    const p = await peerWith(s, { role: 'processor' });
    p.send(agentHello('vm1', 'g2'));
    expect(await expectError(p, 'SR_AUTH')).toMatch(/processor credential .* may not stream as an agent/);
    expect(await snapshot(s.dataDir)).toEqual(before);
    expect((await s.status()).vms).toMatchObject([{ vm: 'vm1', generation: 'g1', appliedLsn: 0 }]);
  });

  it('an agent token cannot act as the processor: no VM list, no subscribe, no acknowledgement', async () => {
    const s = await server({ auth: { secret: newSecret() } });
    await storedStream(s);
    const before = await snapshot(s.dataDir);
    const a = await peerWith(s, { role: 'agent', vm: 'vm1' });
    a.send(PROCESSOR_HELLO);
    // Sent at once behind the hello: they reach a connection already refused.
    a.send({ t: 'applied', vm: 'vm1', generation: 'g1', lsn: 12 });
    expect(await expectError(a, 'SR_AUTH')).toMatch(/agent credential .* may not act as the processor/);
    expect(await snapshot(s.dataDir)).toEqual(before);
    expect((await s.status()).vms).toMatchObject([{ vm: 'vm1', appliedLsn: 0, processorSubscribed: false }]);
  });

  it("ignores the hello's credential field: it grants nothing, and a good token works with any", async () => {
    const s = await server({ auth: { secret: newSecret() } });
    const token = mint(s.secret!, { role: 'agent', vm: 'vm1' });
    const forged = await peerWith(s, { role: 'agent', vm: 'vm2' });
    forged.send({ ...agentHello('vm1', 'g1'), credential: `${token.signed}.whatever` });
    await expectError(forged, 'SR_AUTH');
    const good = await connect(s, { token });
    good.send({ ...agentHello('vm1', 'g1'), credential: 'anything' });
    expect((await good.expect('welcome')).durableLsn).toBe(0);
  });
});
