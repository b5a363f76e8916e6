import fs from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentHello } from '../helpers.js';
import { mint, newSecret, openPeer, proofFor, request } from './auth-fixture.js';
import { useServers, type RunningServer } from './server-harness.js';
import os from 'node:os';
import path from 'node:path';
import { makePki, type TestPki } from '@site-recovery/test';

const { server, agent, processor } = useServers();
let pki: TestPki;
let otherCa: TestPki;
beforeAll(async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-pki-'));
  pki = await makePki(dir, 'site');
  otherCa = await makePki(dir, 'other');
});
afterAll(async () => {
  await fs.rm(path.dirname(pki.dir), { recursive: true, force: true });
});

const tlsServer = (): Promise<RunningServer> =>
  server({ auth: { secret: newSecret() }, tls: { server: { cert: pki.cert, key: pki.key }, ca: pki.ca } });

describe('cache-store over TLS', () => {
  it('a client trusting the CA streams over wss:// and reads /status over https://', async () => {
    const s = await tlsServer();
    expect(s.url).toMatch(/^wss:\/\//);
    const { peer } = await agent(s, 'vm1', 'g1');
    peer.close();
    const { vms } = await processor(s);
    expect(vms).toMatchObject([{ vm: 'vm1', generation: 'g1' }]);
    expect(await s.status()).toMatchObject({ tls: true, authentication: true });
  });

  it('a client trusting another CA refuses the server: no credential is sent to it', async () => {
    const s = await tlsServer();
    const headers = proofFor(mint(s.secret!, { role: 'agent', vm: 'vm1' }), s.url);
    await expect(openPeer(s.url, { headers, ca: otherCa.ca })).rejects.toMatchObject({
      code: expect.stringMatching(/SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE/) as unknown,
    });
    await expect(request(s.url.replace(/^wss/, 'https'), '/health', { ca: otherCa.ca })).rejects.toThrow(
      /self.signed|unable to verify/i,
    );
  });

  it('refuses plaintext: a ws:// upgrade and an http:// request reach nothing', async () => {
    const s = await tlsServer();
    const plain = s.url.replace(/^wss/, 'ws');
    const token = mint(s.secret!, { role: 'agent', vm: 'vm1' });
    await expect(openPeer(plain, { headers: proofFor(token, plain) })).rejects.toThrow(/socket hang up|ECONNRESET/);
    await expect(request(plain.replace(/^ws/, 'http'), '/health')).rejects.toThrow(/socket hang up|ECONNRESET/);
    // The TLS endpoint goes on serving.
    const peer = await openPeer(s.url, { headers: proofFor(token, s.url), ca: pki.ca });
    peer.send(agentHello('vm1', 'g1'));
    expect((await peer.expect('welcome')).durableLsn).toBe(0);
    peer.close();
  });
});
