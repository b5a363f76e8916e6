import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { authHeaders } from '@site-recovery/shared';
import { afterEach, describe, expect, it } from 'vitest';
import { mint, newSecret, request } from './auth-fixture.js';
import { useServers } from './server-harness.js';

// The data dir on a tmpfs remounted read-only makes the store really unhealthy (tests run as root).
const mounts: string[] = [];
afterEach(async () => {
  for (const m of mounts.splice(0)) {
    execFileSync('umount', ['-l', m]);
    await fs.rm(m, { recursive: true, force: true });
  }
});
const { server, agent } = useServers();

describe('HTTP routes with authentication on', () => {
  it('/status and /health/details need a processor token: 401 without or with a bad one, 403 for an agent token', async () => {
    const secret = newSecret();
    const s = await server({ auth: { secret } });
    await agent(s, 'vm1');
    for (const route of ['/status', '/health/details']) {
      expect(await s.http(route)).toMatchObject({ status: 401, body: { code: 'SR_AUTH' } });
      expect(await s.http(route, 'GET', mint(newSecret(), { role: 'processor' }))).toMatchObject({
        status: 401,
        body: { code: 'SR_AUTH', message: expect.stringMatching(/wrong secret/) as unknown },
      });
      expect(await s.http(route, 'GET', mint(secret, { role: 'processor', expiresInS: -5 }))).toMatchObject({
        status: 401,
      });
      expect(await s.http(route, 'GET', mint(secret, { role: 'agent', vm: 'vm1' }))).toMatchObject({
        status: 403,
        body: { code: 'SR_AUTH', message: expect.stringMatching(/agent credential .* may not/) as unknown },
      });
    }
    expect(await s.http('/status', 'GET', s.processorToken)).toMatchObject({
      status: 200,
      body: { vms: [{ vm: 'vm1' }], authentication: true, tls: false, refusedConnections: 0 },
    });
    expect(await s.http('/health/details', 'GET', s.processorToken)).toEqual({ status: 200, body: { ok: true } });
  });

  it('a proof sent once to /status is refused when replayed', async () => {
    const s = await server({ auth: { secret: newSecret() } });
    const token = mint(s.secret!, { role: 'processor' });
    const base = s.url.replace(/^ws/, 'http');
    const headers = authHeaders(token, new URL('/status', base));
    expect((await request(base, '/status', { headers })).status).toBe(200);
    expect(await request(base, '/status', { headers })).toMatchObject({
      status: 401,
      body: { message: expect.stringMatching(/replayed/) as unknown },
    });
  });

  it('GET /health stays open but says only {ok}: 200, or 503 without the problems, which need a token', async () => {
    const mount = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-http-auth-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mount]);
    mounts.push(mount);
    const s = await server({ auth: { secret: newSecret() }, dataDir: path.join(mount, 'data') });
    expect(await s.http('/health')).toEqual({ status: 200, body: { ok: true } });
    execFileSync('mount', ['-o', 'remount,ro', mount]);
    expect(await s.http('/health')).toEqual({ status: 503, body: { ok: false } });
    expect(await s.http('/health/details', 'GET', s.processorToken)).toMatchObject({
      status: 503,
      body: { ok: false, problems: [{ code: 'SR_IO' }] },
    });
    execFileSync('mount', ['-o', 'remount,rw', mount]);
    expect(await s.http('/health')).toEqual({ status: 200, body: { ok: true } });
  });

  it('without a verifier (the library default, --insecure) every route is open as before', async () => {
    const s = await server();
    await agent(s, 'vm1');
    expect(await s.http('/status')).toMatchObject({
      status: 200,
      body: { vms: [{ vm: 'vm1' }], authentication: false },
    });
    expect(await s.http('/health/details')).toEqual({ status: 200, body: { ok: true } });
  });
});
