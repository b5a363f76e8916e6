import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getJson, makeImage, startAgent, tempDir, waitUntil, type AgentProcess } from '@site-recovery/test';
import { AuthCacheStore } from './auth-cache-store.js';
import { makePki, type TestPki } from '@site-recovery/test';
import { writeSecret, writeToken } from './credentials.js';

// sr-agent to a wss:// cache-store: the server's certificate is verified against --tls-ca, and the
// token's proof travels inside TLS. Certificates are made at run time with openssl.

interface StreamStatus {
  state: string;
  reconnects: number;
  lastError?: string;
}

let t: { dir: string; cleanup: () => Promise<void> };
let secret: Buffer;
let ours: TestPki;
let theirs: TestPki;
let store: AuthCacheStore;
const agents: AgentProcess[] = [];
beforeAll(async () => {
  t = await tempDir('agent-tls');
  ({ secret } = await writeSecret(t.dir));
  ours = await makePki(t.dir, 'ours');
  theirs = await makePki(t.dir, 'theirs');
  store = await AuthCacheStore.start({ secret, tls: { certFile: ours.certFile, keyFile: ours.keyFile } });
});
afterAll(async () => {
  for (const a of agents) expect(await a.stop()).toBe(0);
  await store?.close();
  await t.cleanup();
});

async function agentWithCa(vm: string, caFile: string): Promise<AgentProcess> {
  const image = path.join(t.dir, `${vm}.img`);
  await makeImage(image, 16 << 20, [{ offset: 0, length: 1 << 20 }]);
  const token = await writeToken(t.dir, secret, { id: `${vm}-token`, role: 'agent', vm });
  const agent = await startAgent({
    vm,
    disks: [{ id: 'os', path: image }],
    dataDir: path.join(t.dir, `${vm}-data`),
    args: ['--cache-store', store.url, '--token-file', token.file, '--tls-ca', caFile, '--status', '127.0.0.1:0'],
  });
  agents.push(agent);
  return agent;
}

const streamOf = async (agent: AgentProcess): Promise<StreamStatus> =>
  ((await getJson(`http://${String(agent.ready['status'])}/status`)) as { replication: { stream: StreamStatus } })
    .replication.stream;

describe('the agent over wss://', () => {
  it('streams to a cache-store whose certificate chains to --tls-ca, its proof checked inside TLS', async () => {
    expect(store.url).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/$/);
    const agent = await agentWithCa('tls-ok', ours.caFile);
    await waitUntil(
      'the agent to stream over wss://',
      async () => ((await streamOf(agent)).state === 'streaming' ? true : undefined),
      30_000,
    );
    const seen = store.upgrades.filter((u) => u.result.ok && u.result.claims.vm === 'tls-ok');
    expect(seen).toHaveLength(1);
    expect(seen[0]!.target.host).toBe(new URL(store.url).host);
    expect(store.hellos.map((h) => h.vm)).toContain('tls-ok');
  });

  it('refuses a cache-store whose certificate comes from another CA: no upgrade is sent, and it keeps retrying', async () => {
    const upgradesBefore = store.upgrades.length;
    const tlsErrorsBefore = store.tlsErrors;
    const agent = await agentWithCa('tls-wrong-ca', theirs.caFile);
    const stream = await waitUntil(
      'the agent to fail the TLS handshake twice',
      async () => {
        const s = await streamOf(agent);
        return s.reconnects >= 2 ? s : undefined;
      },
      30_000,
    );
    expect(stream.state).not.toBe('streaming');
    expect(stream.lastError).toMatch(/certificate/i);
    // The handshake failed before any HTTP: the server never saw the agent's request, proof or hello.
    expect(store.upgrades.length).toBe(upgradesBefore);
    expect(store.hellos.map((h) => h.vm)).not.toContain('tls-wrong-ca');
    expect(store.tlsErrors).toBeGreaterThan(tlsErrorsBefore);
  });
});
