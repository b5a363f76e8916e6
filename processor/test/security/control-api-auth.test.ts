import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { RecordKind, authHeaders, parseToken, recordChecksum } from '@site-recovery/shared';
import { failoverRoot, groupsDir, testFailoverRoot, vmConfigFile } from '../../src/names.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  VM,
  deadUrl,
  rawRequest,
  replicaDisk,
  startAuthedProcessor,
  tempDir,
  token,
  waitFor,
  writeSecret,
  type AuthedProcessor,
  type RawRequest,
  type TestToken,
} from './security-fixture.js';

// The control API as an attacker on the network, or a web page in the operator's browser, meets it:
// every route but a bare GET /health refuses anything but a fresh proof of an operator token signed
// with the processor's own secret, and what it refuses changes nothing.

let root: { dir: string; cleanup: () => Promise<void> };
let n = 0;
let p: AuthedProcessor | undefined;

beforeAll(async () => {
  root = await tempDir('control-api-auth');
});
afterEach(async () => {
  await p?.close();
  p = undefined;
});
afterAll(() => root.cleanup());

async function start(auth = {}): Promise<AuthedProcessor> {
  const dir = path.join(root.dir, `case-${++n}`);
  await fsp.mkdir(dir, { recursive: true });
  p = await startAuthedProcessor(dir, await deadUrl(), { auth });
  return p;
}

/** Every route of the control API, with a body it would take. */
const ROUTES: { method: string; path: string; body?: unknown }[] = [
  { method: 'GET', path: '/status' },
  { method: 'GET', path: '/health' },
  { method: 'GET', path: `/vms/${VM}/points` },
  { method: 'GET', path: `/vms/${VM}/config` },
  { method: 'PUT', path: `/vms/${VM}/config`, body: { retentionMs: 7_200_000 } },
  { method: 'POST', path: `/vms/${VM}/failover`, body: { point: 'latest-processed' } },
  { method: 'POST', path: `/vms/${VM}/test-failover`, body: { point: 'latest-processed', network: 'test' } },
  { method: 'POST', path: `/vms/${VM}/test-failover-cleanup`, body: {} },
  { method: 'POST', path: `/vms/${VM}/commit`, body: {} },
  { method: 'GET', path: '/groups/shop/config' },
  { method: 'GET', path: '/groups/shop/points' },
  { method: 'PUT', path: '/groups/shop/config', body: { multiVmFrequencyMs: 60_000 } },
  { method: 'POST', path: '/groups/shop/failover', body: { point: 'latest-multi-vm' } },
  { method: 'POST', path: '/groups/shop/test-failover', body: { point: 'latest-multi-vm', network: 'test' } },
  { method: 'POST', path: '/groups/shop/test-failover-cleanup', body: {} },
];

function call(
  port: number,
  route: (typeof ROUTES)[number],
  r: Partial<RawRequest> = {},
): ReturnType<typeof rawRequest> {
  return rawRequest(port, {
    method: route.method,
    path: route.path,
    ...(route.body !== undefined
      ? { body: JSON.stringify(route.body), headers: { 'content-type': 'application/json' } }
      : {}),
    ...r,
  });
}

/** What an unauthorised request could have changed: points, replica bytes, failover state, config. */
async function snapshot(a: AuthedProcessor): Promise<unknown> {
  const v = a.processor.get(VM)!;
  const configFile = vmConfigFile(a.dataDir, VM);
  return {
    points: v.current?.points.list().map((pt) => pt.id),
    disk: (await fsp.readFile(replicaDisk(a.dataDir))).toString('base64'),
    failover: a.processor.status().vms.find((s) => s.vm === VM)?.failover,
    failoverDirs: [failoverRoot(a.dataDir), testFailoverRoot(a.dataDir)].filter((d) => fs.existsSync(d)),
    config: fs.existsSync(configFile) ? await fsp.readFile(configFile, 'utf8') : undefined,
    groups: fs.existsSync(groupsDir(a.dataDir)),
  };
}

/** Cuts `count` recovery points of the VM, each after one more write has been applied (a new LSN). */
async function cutPoints(a: AuthedProcessor, count: number): Promise<string[]> {
  const v = a.processor.get(VM)!;
  for (let i = 0; i < count; i++) {
    if (i > 0) {
      const data = randomBytes(4096);
      const write = { lsn: v.appliedLsn + 1, kind: RecordKind.WRITE, disk: 0, offset: 4096 * i, length: 4096, data };
      await v.applyBatch('g1', [{ ...write, crc: recordChecksum(write, data) }], undefined);
    }
    await v.cutPoint('crash');
  }
  return v.current!.points.list().map((pt) => pt.id);
}

/** A token whose claims were edited (role raised to operator) but whose MAC is the original's. */
function forged(from: TestToken): TestToken {
  const [prefix, claims, mac] = from.text.split('.') as [string, string, string];
  const raised = { ...(JSON.parse(Buffer.from(claims, 'base64url').toString()) as object), role: 'operator' };
  const text = `${prefix}.${Buffer.from(JSON.stringify(raised)).toString('base64url')}.${mac}`;
  const parsed = parseToken(text);
  if (!parsed.ok) throw new Error(parsed.message);
  return { text, parsed };
}

describe('control API authentication', () => {
  it('refuses every route without a good operator credential (401) or with another role (403), changing nothing', async () => {
    const a = await start();
    expect(await cutPoints(a, 2)).toHaveLength(2);
    const before = await snapshot(a);
    const now = Math.floor(Date.now() / 1000);
    const cacheStoreSecret = await writeSecret(path.join(root.dir, `cache-store-${n}.secret`));
    const stranger = await writeSecret(path.join(root.dir, `stranger-${n}.secret`));
    const bad: [string, TestToken | undefined, number][] = [
      ['wrong secret', token(stranger, 'operator', 'op-x'), 401],
      // The source region's secret mints agent and processor tokens; an operator token of it is worthless here.
      ['minted with the cache-store secret', token(cacheStoreSecret, 'operator', 'op-cs'), 401],
      ['expired', token(a.secret, 'operator', 'op-old', { expiresAt: now - 1 }), 401],
      ['revoked', token(a.secret, 'operator', 'revoked-op'), 401],
      ['forged role', forged(token(a.secret, 'processor', 'proc-1')), 401],
      ['agent role', token(a.secret, 'agent', 'agent-1', { vm: VM }), 403],
      ['processor role', token(a.secret, 'processor', 'proc-2'), 403],
    ];
    const seen: string[] = [];
    for (const route of ROUTES) {
      if (route.path !== '/health') {
        const none = await call(a.port, route);
        seen.push(`${route.method} ${route.path} none: ${none.status} ${String(none.body['code'])}`);
      }
      for (const [what, t, status] of bad) {
        const r = await call(a.port, route, { token: t!.parsed });
        expect(r.status, `${route.method} ${route.path} with a token ${what}`).toBe(status);
        expect(r.body['code']).toBe('SR_AUTH');
      }
    }
    expect(
      seen.every((s) => s.endsWith(': 401 SR_AUTH')),
      seen.join('\n'),
    ).toBe(true);
    expect(await snapshot(a)).toEqual(before);
  });

  it('refuses a replayed proof, and one made for another path', async () => {
    const a = await start();
    const status = { method: 'GET', path: '/status' };
    const header = authHeaders(a.operator.parsed, `http://${a.listen}/status`, 'GET');
    expect((await call(a.port, status, { headers: header })).status).toBe(200);
    const replay = await call(a.port, status, { headers: header });
    expect(replay).toMatchObject({ status: 401, body: { code: 'SR_AUTH' } });
    expect(String(replay.body['message'])).toContain('replayed');
    const put = ROUTES.find((r) => r.method === 'PUT')!;
    const once = {
      'content-type': 'application/json',
      ...authHeaders(a.operator.parsed, `http://${a.listen}${put.path}`, 'PUT'),
    };
    expect((await call(a.port, put, { headers: once })).status).toBe(200);
    expect((await call(a.port, put, { headers: once })).status).toBe(401);
    // A proof of GET /status sent to the commit route.
    const moved = authHeaders(a.operator.parsed, `http://${a.listen}/status`, 'GET');
    const commit = ROUTES.find((r) => r.path.endsWith('/commit'))!;
    expect((await call(a.port, commit, { headers: { 'content-type': 'application/json', ...moved } })).status).toBe(
      401,
    );
  });

  it('reads the revocation file again when it changes', async () => {
    const a = await start();
    const later = token(a.secret, 'operator', 'later-revoked');
    const status = ROUTES[0]!;
    expect((await call(a.port, status, { token: later.parsed })).status).toBe(200);
    await fsp.appendFile(a.revokedFile, 'later-revoked\n');
    await waitFor('the revoked token to be refused', async () =>
      (await call(a.port, status, { token: later.parsed })).status === 401 ? true : undefined,
    );
    expect((await call(a.port, status, { token: a.operator.parsed })).status).toBe(200);
  });

  it('answers a bare GET /health with {ok} only; the details need the token', async () => {
    const a = await start();
    const bare = await rawRequest(a.port, { method: 'GET', path: '/health' });
    expect(bare.status).toBe(200);
    expect(bare.body).toEqual({ ok: true });
    const full = await rawRequest(a.port, { method: 'GET', path: '/health', token: a.operator.parsed });
    expect(full).toMatchObject({ status: 200, body: { ok: true, problems: [], vms: 1 } });
  });

  it('failover and commit without a token, a JSON type or our Host change nothing; with them they work', async () => {
    const a = await start();
    const points = await cutPoints(a, 2);
    expect(points).toHaveLength(2);
    const failover = { method: 'POST', path: `/vms/${VM}/failover`, body: { point: points[0] } };
    const commit = { method: 'POST', path: `/vms/${VM}/commit` };
    const before = await snapshot(a);

    expect((await call(a.port, failover)).status).toBe(401);
    // A form a web page posts: text/plain, with a good token even.
    const text = await call(a.port, failover, {
      token: a.operator.parsed,
      headers: { 'content-type': 'text/plain' },
    });
    expect(text).toMatchObject({ status: 415, body: { code: 'SR_UNSUPPORTED_MEDIA_TYPE' } });
    // DNS rebinding: the page's own name in Host.
    const foreign = `evil.example:${a.port}`;
    const rebound = await call(a.port, failover, { host: foreign, token: a.operator.parsed });
    expect(rebound).toMatchObject({ status: 421, body: { code: 'SR_BAD_HOST' } });
    expect(await snapshot(a)).toEqual(before);

    // The same request, properly made, does fail over: the refusals above were not for want of a VM.
    expect((await call(a.port, failover, { token: a.operator.parsed })).status).toBe(200);
    expect(a.processor.status().vms[0]?.failover).toBe('failed-over');
    const failedOver = await snapshot(a);

    expect((await call(a.port, commit)).status).toBe(401);
    // An empty POST with no type at all (what a cross-site fetch can send).
    expect((await call(a.port, commit, { token: a.operator.parsed })).status).toBe(415);
    expect(await snapshot(a)).toEqual(failedOver);

    const ok = await call(a.port, commit, {
      token: a.operator.parsed,
      headers: { 'content-type': 'application/json' },
    });
    expect(ok.status).toBe(200);
    expect(
      a.processor
        .get(VM)!
        .current!.points.list()
        .map((pt) => pt.id),
    ).toEqual([points[0]]);
  });

  it('serves the Host names of --allowed-hosts and loopback names, no others', async () => {
    const a = await start({ allowedHosts: ['sr.example', 'proxy.example:8443'] });
    const status = ROUTES[0]!;
    const answer = async (host: string): Promise<number> =>
      (await call(a.port, status, { host, token: a.operator.parsed })).status;
    expect(await answer(`127.0.0.1:${a.port}`)).toBe(200);
    expect(await answer(`localhost:${a.port}`)).toBe(200);
    expect(await answer(`sr.example:${a.port}`)).toBe(200);
    expect(await answer('sr.example')).toBe(200);
    expect(await answer('proxy.example:8443')).toBe(200);
    expect(await answer(`proxy.example:${a.port}`)).toBe(421);
    expect(await answer(`127.0.0.1:${a.port + 1}`)).toBe(421);
    expect(await answer(`evil.example:${a.port}`)).toBe(421);
  });
});

describe('audit log', () => {
  it('records each action and each refused credential, and never a token or proof', async () => {
    const a = await start();
    const [first] = await cutPoints(a, 1);
    const json = { 'content-type': 'application/json' };
    const commit = { method: 'POST', path: `/vms/${VM}/commit`, body: {} };
    const stranger = token(await writeSecret(path.join(root.dir, `s-${n}.secret`)), 'operator', 'intruder');
    expect((await call(a.port, commit, { token: stranger.parsed })).status).toBe(401);
    expect((await call(a.port, commit)).status).toBe(401);
    // Refused by the processor, not the gate: committing what was never failed over.
    expect((await call(a.port, commit, { token: a.operator.parsed })).status).toBe(409);
    const put = { method: 'PUT', path: `/vms/${VM}/config`, body: { retentionMs: 7_200_000 } };
    expect((await call(a.port, put, { token: a.operator.parsed, headers: json })).status).toBe(200);
    const failover = { method: 'POST', path: `/vms/${VM}/failover`, body: { point: first } };
    expect((await call(a.port, failover, { token: a.operator.parsed })).status).toBe(200);

    const lines = await waitFor('five audit lines', async () => {
      const text = await fsp.readFile(a.auditFile, 'utf8').catch(() => '');
      const l = text.split('\n').filter((x) => x !== '');
      return l.length >= 5 ? l.map((x) => JSON.parse(x) as Record<string, unknown>) : undefined;
    });
    const shape = lines.map(({ time, ...rest }) => (expect(Date.parse(String(time))).toBeGreaterThan(0), rest));
    const refusal = { action: 'authenticate', outcome: 'refused', code: 'SR_AUTH', method: 'POST' };
    expect(shape).toEqual([
      { ...refusal, callerId: 'intruder', path: commit.path, remote: '127.0.0.1' },
      { ...refusal, callerId: null, path: commit.path, remote: '127.0.0.1' },
      {
        action: 'commit',
        vm: VM,
        callerId: 'op-1',
        callerRole: 'operator',
        outcome: 'refused',
        code: 'SR_NOT_FAILED_OVER',
      },
      { action: 'configure', vm: VM, callerId: 'op-1', callerRole: 'operator', outcome: 'ok', code: null },
      { action: 'failover', vm: VM, callerId: 'op-1', callerRole: 'operator', outcome: 'ok', code: null },
    ]);
    const text = await fsp.readFile(a.auditFile, 'utf8');
    for (const t of [a.operator, stranger]) {
      expect(text).not.toContain(t.text.split('.')[2]!);
      expect(text).not.toContain(t.text.split('.')[1]!);
    }
    expect(text).not.toContain('srt1');
    expect((await fsp.stat(a.auditFile)).mode & 0o777).toBe(0o600);
  });

  it('records group actions with the group and its members at the time', async () => {
    const a = await start();
    await a.processor.noteGroup(VM, 'shop');
    const as = { token: a.operator.parsed };
    const put = { method: 'PUT', path: '/groups/shop/config', body: { multiVmFrequencyMs: 60_000 } };
    expect((await call(a.port, put, as)).status).toBe(200);
    const failover = { method: 'POST', path: '/groups/shop/failover', body: { point: 'latest-multi-vm' } };
    expect((await call(a.port, failover, as)).body['code']).toBe('SR_GROUP_POINT_NOT_FOUND');
    const unknown = { method: 'POST', path: '/groups/nope/test-failover-cleanup', body: {} };
    expect((await call(a.port, unknown, as)).body['code']).toBe('SR_GROUP_NOT_FOUND');
    const lines = await waitFor('three audit lines', async () => {
      const text = await fsp.readFile(a.auditFile, 'utf8').catch(() => '');
      const l = text.split('\n').filter((x) => x !== '');
      return l.length >= 3 ? l.map((x) => JSON.parse(x) as Record<string, unknown>) : undefined;
    });
    const by = { callerId: 'op-1', callerRole: 'operator' };
    expect(lines.map(({ time: _t, ...rest }) => rest)).toEqual([
      { action: 'configure-group', group: 'shop', members: [VM], ...by, outcome: 'ok', code: null },
      {
        action: 'group-failover',
        group: 'shop',
        members: [VM],
        ...by,
        outcome: 'refused',
        code: 'SR_GROUP_POINT_NOT_FOUND',
      },
      {
        action: 'group-test-failover-cleanup',
        group: 'nope',
        members: [],
        ...by,
        outcome: 'refused',
        code: 'SR_GROUP_NOT_FOUND',
      },
    ]);
  });
});
