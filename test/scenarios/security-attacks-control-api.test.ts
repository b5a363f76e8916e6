import fsp from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { authHeaders, loadTokenFile } from '@site-recovery/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ReplicationEnv,
  authFetch,
  requireTools,
  runSr,
  settledState,
  srJson,
  srOk,
  storedState,
  waitUntil,
  type ProtectedVm,
  type SrManifest,
  type StoredState,
} from '@site-recovery/test';

const MiB = 1 << 20;

// The attacks of issue #10 on the target region's control API (port 8470), replayed against the real
// processes with credentials on: anyone who reaches the port, anyone holding a credential of the source
// region (an agent's or the processor's token, or the cache-store's secret), a web page the operator
// opens (a cross-site POST, a DNS-rebinding name). Failover and commit are refused every time, and every
// byte stored (replica, points, stream) is as it was; the refusals are in the audit log.

interface AuditLine {
  action: string;
  outcome: string;
  code: string | null;
  callerId: string | null;
  path?: string;
}

/** A request sent with the Host header of our choosing (a rebinding page's name), as fetch cannot. */
function hostRequest(
  port: number,
  host: string,
  method: string,
  urlPath: string,
  headers: Record<string, string>,
  body = '',
): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method, path: urlPath, headers: { ...headers, host } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('attacks on the control API, with authentication on', () => {
  let env: ReplicationEnv;
  let vm: ProtectedVm;
  let before: StoredState;
  let base: string;
  beforeAll(async () => {
    requireTools(['qemu-io']);
    env = await ReplicationEnv.start('attacks-api');
    vm = await env.protect('victim02', [{ id: 'os', size: 64 * MiB, extents: [{ offset: 0, length: 4 * MiB }] }]);
    before = await settledState(env, vm);
    base = `http://${env.processor.listen}`;
  }, 180_000);
  afterAll(async () => {
    await env?.close();
  });

  async function audit(): Promise<AuditLine[]> {
    const text = await fsp.readFile(path.join(env.dir, 'processor', 'audit.log'), 'utf8').catch(() => '');
    return text
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as AuditLine);
  }

  /** Nothing stored changed, and no failover or commit was done (the audit log has none). */
  async function expectUntouched(): Promise<void> {
    expect(await storedState(env, vm)).toEqual(before);
    const done = (await audit()).filter((l) => ['failover', 'commit'].includes(l.action) && l.outcome === 'ok');
    expect(done).toEqual([]);
  }

  it('refuses failover and commit without a token, with source-region tokens, and with an operator token the cache-store’s secret signed', async () => {
    const c = env.credentials;
    // Credentials an attacker might hold, and the status each must get: 401 for a proof the processor's
    // secret does not verify, 403 for a genuine token of the wrong role.
    const attempts: [string, string | undefined, number][] = [
      ['no token', undefined, 401],
      ['the agent’s token', await c.agentTokenFile(vm.name), 401],
      ['the processor’s token for the cache-store', c.processorTokenFile, 401],
      [
        'an operator token signed with the cache-store’s secret',
        await c.issue(c.cacheStoreSecretFile, { role: 'operator' }),
        401,
      ],
      ['an agent-role token of the processor', await c.issue(c.processorSecretFile, { vm: vm.name }), 403],
      ['a processor-role token of the processor', await c.issue(c.processorSecretFile, { role: 'processor' }), 403],
    ];
    const refusalsBefore = (await audit()).filter((l) => l.action === 'authenticate').length;
    for (const [what, tokenFile, status] of attempts) {
      for (const action of [
        ['failover', vm.name, '--point', 'latest-processed'],
        ['commit', vm.name],
      ]) {
        const r = await runSr({ listen: env.processor.listen, ...(tokenFile ? { tokenFile } : {}) }, action);
        expect([r.code, r.stderr], `sr ${action[0]} with ${what}`).toEqual([
          2,
          expect.stringMatching(/^sr: SR_AUTH: /),
        ]);
      }
      const raw = await authFetch(`${base}/vms/${vm.name}/failover`, {
        method: 'POST',
        json: { point: 'latest-processed' },
        ...(tokenFile ? { tokenFile } : {}),
      });
      expect(raw.status, `POST failover with ${what}`).toBe(status);
    }
    await expectUntouched();
    const refusals = await waitUntil(
      'the audit log to record every refused credential (18)',
      async () => {
        const r = (await audit()).filter((l) => l.action === 'authenticate').slice(refusalsBefore);
        return r.length >= attempts.length * 3 ? r : undefined;
      },
      10_000,
    );
    expect(new Set(refusals.map((l) => `${l.outcome} ${l.code}`))).toEqual(new Set(['refused SR_AUTH']));
    expect(new Set(refusals.map((l) => l.path))).toEqual(
      new Set([`/vms/${vm.name}/failover`, `/vms/${vm.name}/commit`]),
    );
  });

  it('refuses a cross-site POST: without a token, and in any body type but JSON even with one', async () => {
    const url = `${base}/vms/${vm.name}/failover`;
    const tokenFile = env.credentials.operatorTokenFile;
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    // What a page can send without asking first: text/plain, a form, or nothing at all.
    expect((await authFetch(url, { method: 'POST', body: '{"point":"latest-processed"}' })).status).toBe(401);
    expect((await authFetch(url, { method: 'POST', body: '{"point":"latest-processed"}', tokenFile })).status).toBe(
      415,
    );
    expect(
      (await authFetch(url, { method: 'POST', body: 'point=latest-processed', headers: form, tokenFile })).status,
    ).toBe(415);
    expect((await authFetch(`${base}/vms/${vm.name}/commit`, { method: 'POST', tokenFile })).status).toBe(415);
    await expectUntouched();
  });

  it('refuses a DNS-rebinding page (a Host that is not the processor’s) with 421, token or not', async () => {
    const port = Number(env.processor.listen.split(':').pop());
    const token = loadTokenFile(env.credentials.operatorTokenFile);
    const json = { 'content-type': 'application/json' };
    const body = '{"point":"latest-processed"}';
    const failover = `/vms/${vm.name}/failover`;
    for (const host of [`attacker.example:${port}`, `attacker.example`, `10.66.0.1:${port}`]) {
      expect(await hostRequest(port, host, 'POST', failover, json, body), host).toBe(421);
      const proof = authHeaders(token, `http://${host}${failover}`, 'POST');
      expect(await hostRequest(port, host, 'POST', failover, { ...json, ...proof }, body), host).toBe(421);
    }
    // The same request shape with the processor's own name gets past the Host check (to the token check).
    const own = `127.0.0.1:${port}`;
    const status = authHeaders(token, `http://${own}/status`);
    expect(await hostRequest(port, own, 'GET', '/status', status)).toBe(200);
    await expectUntouched();
  });

  it('serves the operator who holds the processor’s token: the refusals were for the credentials', async () => {
    const m = await srJson<SrManifest>(env.processor, [
      'test-failover',
      vm.name,
      '--point',
      'latest-processed',
      '--network',
      'iso-net',
    ]);
    expect(m).toMatchObject({ vm: vm.name, kind: 'test-failover' });
    await srOk(env.processor, ['test-failover-cleanup', vm.name]);
    expect(await storedState(env, vm)).toEqual(before);
    const mine = (await audit()).filter((l) => l.callerId === 'operator' && l.action.startsWith('test-failover'));
    expect(mine.map((l) => [l.action, l.outcome])).toEqual([
      ['test-failover', 'ok'],
      ['test-failover-cleanup', 'ok'],
    ]);
  });
});
