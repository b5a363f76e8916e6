import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, type HttpListener } from '@site-recovery/shared';
import {
  makeImage,
  srSecretNew,
  srTokenIssue,
  startAgent,
  startCacheStore,
  tempDir,
  waitUntil,
  type AgentProcess,
  type ServiceProcess,
} from '@site-recovery/test';
import type { Agent } from '../../src/agent.js';
import { serveStatus } from '../../src/cli/status-server.js';
import { HealthCode } from '../../src/health.js';
import { faultFilter, ioError } from '../backend/fault-filter.js';
import { startInProcess } from '../in-process-agent.js';
import { CMD, openExport, tx } from '../nbd/raw-nbd.js';

interface Health {
  ok: boolean;
  problems: { code: string; message: string }[];
}

async function get(url: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

/** A loopback port that was free a moment ago (for a service started later at a known address). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

// A monitor or load balancer looks at /health's status code: it used to be 200 whatever happened.
describe('GET /health', () => {
  let t: { dir: string; cleanup: () => Promise<void> };
  beforeAll(async () => {
    t = await tempDir('health');
  });
  afterAll(() => t.cleanup());

  it('answers 200 while the agent is well and 503 with the problem once an image fails', async () => {
    let failFlush = false;
    let agent: Agent | undefined;
    let http: HttpListener | undefined;
    try {
      ({ agent } = await startInProcess(t.dir, 'imgfail', {
        imageFilter: faultFilter((op) => (op === 'flush' && failFlush ? ioError('EIO') : undefined)),
      }));
      http = await serveStatus({ host: '127.0.0.1', port: 0 }, agent, createLogger('health', 'silent'));
      const base = `http://${http.listen}`;

      expect(await get(`${base}/health`)).toEqual({ status: 200, body: { ok: true, vm: 'imgfail', problems: [] } });
      const status = await get(`${base}/status`);
      expect(status).toMatchObject({ status: 200, body: { vm: 'imgfail', connections: 0, refusedConnections: 0 } });
      expect((await get(`${base}/nothing`)).status).toBe(404);
      expect((await fetch(`${base}/health`, { method: 'POST' })).status).toBe(405);

      const c = await openExport(agent.address.port, 'os');
      failFlush = true;
      expect((await tx(c, CMD.FLUSH, 0, 0n, 0)).errno).toBe(5);
      c.close();
      const sick = await get(`${base}/health`);
      expect(sick.status).toBe(503);
      expect(sick.body).toMatchObject({ ok: false, vm: 'imgfail', problems: [{ code: HealthCode.IMAGE_SYNC_FAILED }] });
      expect((sick.body as Health).problems[0]!.message).toMatch(/disk os: an fdatasync of the image failed/);
    } finally {
      await http?.close();
      await agent?.close().catch(() => undefined);
    }
  });

  it('reports the cache-store unreachable past --health-disconnected-after, and healthy once it streams', async () => {
    const image = path.join(t.dir, 'link.img');
    await makeImage(image, 16 << 20, [{ offset: 0, length: 1 << 20 }]);
    const port = await freePort();
    // Credentials as a user makes them: the agent must be let in by the cache-store for /health to turn 200.
    const secretFile = await srSecretNew(path.join(t.dir, 'cs.secret'));
    const tokenFile = await srTokenIssue(secretFile, { vm: 'link' }, path.join(t.dir, 'link.token'));
    let agent: AgentProcess | undefined;
    let cs: ServiceProcess | undefined;
    try {
      agent = await startAgent({
        vm: 'link',
        disks: [{ id: 'os', path: image }],
        dataDir: path.join(t.dir, 'link-data'),
        tokenFile,
        args: [
          '--cache-store',
          `ws://127.0.0.1:${port}`,
          '--status',
          '127.0.0.1:0',
          '--health-disconnected-after',
          '1s',
        ],
      });
      const url = `http://${String(agent.ready['status'])}/health`;
      const down = await waitUntil(
        'GET /health to report the cache-store unreachable',
        async () => {
          const r = await get(url);
          return r.status === 503 ? (r.body as Health) : undefined;
        },
        20_000,
        100,
      );
      expect(down.ok).toBe(false);
      expect(down.problems.map((p) => p.code)).toEqual([HealthCode.CACHE_STORE_UNREACHABLE]);
      expect(down.problems[0]!.message).toContain(`ws://127.0.0.1:${port}`);

      cs = await startCacheStore(path.join(t.dir, 'cs'), `127.0.0.1:${port}`, { secretFile });
      const up = await waitUntil(
        'GET /health to answer 200 once the stream runs',
        async () => {
          const r = await get(url);
          return r.status === 200 ? (r.body as Health) : undefined;
        },
        30_000,
        100,
      );
      expect(up).toEqual({ ok: true, vm: 'link', problems: [] });
      expect(await agent.stop()).toBe(0);
    } finally {
      if (agent !== undefined && agent.child.exitCode === null) await agent.kill();
      await cs?.stop();
    }
  });
});
