import fsp from 'node:fs/promises';
import type http from 'node:http';
import path from 'node:path';
import WebSocket from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AUTH_HEADER } from '@site-recovery/shared';
import { getJson, makeImage, startAgent, tempDir, waitUntil, type AgentProcess } from '@site-recovery/test';
import { AuthCacheStore } from './auth-cache-store.js';
import { writeSecret, writeToken } from './credentials.js';

// sr-agent with --token-file against a server that checks each upgrade as the cache-store does.

interface StreamStatus {
  state: string;
  reconnects: number;
  lastError?: string;
  refused?: { status?: number; code: string; message: string; since: string };
}
interface Health {
  ok: boolean;
  problems: { code: string; message: string }[];
}

let t: { dir: string; cleanup: () => Promise<void> };
let secret: Buffer;
const open: (() => Promise<unknown>)[] = [];
beforeAll(async () => {
  t = await tempDir('agent-token-proof');
  ({ secret } = await writeSecret(t.dir));
});
afterEach(async () => {
  for (const close of open.splice(0).reverse()) await close();
});
afterAll(() => t.cleanup());

async function agentFor(vm: string, store: AuthCacheStore, tokenFile: string): Promise<AgentProcess> {
  const image = path.join(t.dir, `${vm}.img`);
  await makeImage(image, 16 << 20, [{ offset: 0, length: 1 << 20 }]);
  const agent = await startAgent({
    vm,
    disks: [{ id: 'os', path: image }],
    dataDir: path.join(t.dir, `${vm}-data`),
    args: ['--cache-store', store.url, '--token-file', tokenFile, '--status', '127.0.0.1:0'],
  });
  open.push(async () => expect(await agent.stop()).toBe(0));
  return agent;
}

const streamOf = async (agent: AgentProcess): Promise<StreamStatus> =>
  ((await getJson(`http://${String(agent.ready['status'])}/status`)) as { replication: { stream: StreamStatus } })
    .replication.stream;

async function healthOf(agent: AgentProcess): Promise<{ status: number; body: Health }> {
  const res = await fetch(`http://${String(agent.ready['status'])}/health`);
  return { status: res.status, body: (await res.json()) as Health };
}

/** Answers an upgrade that carries `headers`: the HTTP status of the refusal, or 101 when it went through. */
function upgradeStatus(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('unexpected-response', (_req: http.ClientRequest, res: http.IncomingMessage) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once('open', () => (resolve(101), ws.terminate()));
    ws.once('error', (err) => reject(err));
  });
}

describe('the agent proves its token at every dial', () => {
  it('sends a fresh single-use proof of its VM token per upgrade, never the token itself; a replayed proof is refused', async () => {
    const store = await AuthCacheStore.start({ secret });
    open.push(() => store.close());
    const token = await writeToken(t.dir, secret, { id: 'web-1-token', role: 'agent', vm: 'web-1' });
    const agent = await agentFor('web-1', store, token.file);

    await waitUntil(
      'the agent to stream after its first upgrade',
      async () => ((await streamOf(agent)).state === 'streaming' ? true : undefined),
      30_000,
    );
    const first = store.upgrades[0]!;
    expect(first.result).toMatchObject({ ok: true, claims: { id: 'web-1-token', role: 'agent', vm: 'web-1' } });
    expect(store.hellos[0]).toMatchObject({ role: 'agent', vm: 'web-1' });
    expect(store.hellos[0]).not.toHaveProperty('credential');
    // The proof names the claims but carries no MAC of the token; nor does anything the agent prints.
    const mac = token.text.split('.')[2]!;
    expect(first.header).toBeDefined();
    expect(first.header).not.toContain(mac);
    expect(agent.stderr()).not.toContain(mac);
    expect(JSON.stringify(agent.ready)).not.toContain(mac);

    // Captured and sent again, the header is refused: by the verifier, and at a real upgrade.
    const replay = store.verifier.check(first.header, first.target, { roles: ['agent'] });
    expect(replay).toMatchObject({ ok: false, code: 'SR_AUTH', message: expect.stringMatching(/replayed/) as string });
    expect(await upgradeStatus(store.url, { [AUTH_HEADER]: first.header! })).toBe(401);
    expect(store.upgrades.at(-1)!.result).toMatchObject({
      ok: false,
      message: expect.stringMatching(/replayed/) as string,
    });

    // A dropped link is redialled with a new proof, which the same verifier accepts.
    for (const ws of store.sockets) ws.terminate();
    await waitUntil(
      'the agent to dial again and stream',
      async () => (store.accepted.length === 2 && (await streamOf(agent)).state === 'streaming' ? true : undefined),
      30_000,
    );
    const second = store.accepted[1]!;
    expect(second.header).not.toBe(first.header);
    expect(second.result).toMatchObject({ ok: true, claims: { vm: 'web-1' } });
  });

  it('shows a refused token as SR_AUTH in /status and /health, keeps retrying with backoff, and streams once it is accepted again', async () => {
    const revoked = path.join(t.dir, 'revoked-tokens');
    await fsp.writeFile(revoked, 'db-1-token\n');
    const store = await AuthCacheStore.start({ secret, revokedTokensFile: revoked });
    open.push(() => store.close());
    const token = await writeToken(t.dir, secret, { id: 'db-1-token', role: 'agent', vm: 'db-1' });
    const agent = await agentFor('db-1', store, token.file);

    await waitUntil(
      'three refused upgrades (the agent retrying)',
      () => (store.refused.length >= 3 ? true : undefined),
      30_000,
    );
    expect(store.accepted).toHaveLength(0);
    expect(agent.child.exitCode).toBeNull();
    const stream = await streamOf(agent);
    expect(stream.state).not.toBe('streaming');
    expect(stream.reconnects).toBeGreaterThanOrEqual(2);
    expect(stream.refused).toMatchObject({ status: 401, code: 'SR_AUTH', message: 'credential db-1-token is revoked' });
    expect(stream.lastError).toMatch(
      /^SR_AUTH: the cache-store refused this agent \(HTTP 401 to the upgrade\): credential db-1-token is revoked/,
    );
    const health = await healthOf(agent);
    expect(health.status).toBe(503);
    const problem = health.body.problems.find((p) => p.code === 'SR_AUTH');
    expect(problem?.message).toContain('credential db-1-token is revoked');
    expect(problem?.message).toContain('sr token issue --secret-file <cache-store secret> --vm db-1');
    // Logged once as an error, not once per dial.
    const logged = agent
      .stderr()
      .split('\n')
      .filter((l) => l.includes('the cache-store refuses this agent'));
    expect(logged).toHaveLength(1);

    // The operator lifts the revocation: the next dial goes through and the problem clears.
    await fsp.writeFile(revoked, '# none\n');
    await waitUntil(
      'the agent to stream once the token is no longer revoked',
      async () => ((await streamOf(agent)).state === 'streaming' ? true : undefined),
      30_000,
    );
    expect((await streamOf(agent)).refused).toBeUndefined();
    expect(await healthOf(agent)).toMatchObject({ status: 200, body: { ok: true, problems: [] } });
    expect(store.accepted.at(-1)!.result).toMatchObject({ ok: true, claims: { id: 'db-1-token' } });
  });

  it('shows a hello the cache-store refuses after the upgrade as SR_AUTH too, and recovers the same way', async () => {
    const store = await AuthCacheStore.start({ secret });
    open.push(() => store.close());
    store.helloRefusal = 'VM app-1 is not enrolled here';
    const token = await writeToken(t.dir, secret, { id: 'app-1-token', role: 'agent', vm: 'app-1' });
    const agent = await agentFor('app-1', store, token.file);

    await waitUntil('two refused hellos', () => (store.hellos.length >= 2 ? true : undefined), 30_000);
    const stream = await streamOf(agent);
    expect(stream.state).not.toBe('streaming');
    expect(stream.refused).toMatchObject({ code: 'SR_AUTH', message: 'VM app-1 is not enrolled here' });
    expect(stream.refused).not.toHaveProperty('status');
    const health = await healthOf(agent);
    expect(health.status).toBe(503);
    expect(health.body.problems.map((p) => p.code)).toContain('SR_AUTH');

    store.helloRefusal = undefined;
    await waitUntil(
      'the agent to stream once its hello is accepted',
      async () => ((await streamOf(agent)).state === 'streaming' ? true : undefined),
      30_000,
    );
    expect((await streamOf(agent)).refused).toBeUndefined();
    expect((await healthOf(agent)).status).toBe(200);
  });
});
