import fsp from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { WebSocketServer } from 'ws';
import {
  MessageSchema,
  RecordKind,
  decodeMessage,
  encodeBatch,
  encodeMessage,
  type ChangeRecord,
} from '@site-recovery/shared';
import {
  Credentials,
  authFetch,
  startCacheStore,
  startProcessor as startProcessorCli,
  type ServiceProcess,
} from '@site-recovery/test';
import { describe, expect, it } from 'vitest';
import type { HealthReport } from '../../src/health.js';
import { DEFAULT_VM_CONFIG } from '../../src/vm-config.js';
import type { Processor } from '../../src/processor.js';
import { api, deadUrl, readyReplica, startProcessor, until, useCaseDirs } from '../helpers.js';

// GET /health over real HTTP: 200 only while every VM is replicated and protected and the cache-store
// is within reach; 503 with one problem per cause otherwise, and 200 again once the cause is gone.

const VM = 'web01';
const DISKS = [{ id: 'os', size: 1 << 20 }];

const cleanups: (() => Promise<unknown>)[] = [];
const caseDir = useCaseDirs('health', async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function inProcess(dataDir: string, url: string, options = {}): Promise<Processor> {
  const p = await startProcessor(dataDir, url, options);
  cleanups.push(() => p.close());
  return p;
}

/** GET /health; with `tokenFile` (an operator token of a processor with authentication on) the details. */
async function health(listen: string, tokenFile?: string): Promise<{ status: number; body: HealthReport }> {
  if (tokenFile === undefined) return api<HealthReport>(listen, 'GET', '/health');
  const res = await authFetch(`http://${listen}/health`, { tokenFile });
  return { status: res.status, body: (await res.json()) as HealthReport };
}

/** Waits for /health to answer `status`, and returns that answer; the failure shows the last answer. */
async function healthBecomes(listen: string, status: number, what: string, tokenFile?: string): Promise<HealthReport> {
  return until(
    what,
    async () => {
      const h = await health(listen, tokenFile);
      if (h.status !== status) throw new Error(`the last answer was ${JSON.stringify(h)}`);
      return h.body;
    },
    20_000,
  );
}

/**
 * A cache-store that lists one VM and answers its subscription with a batch whose record fails its
 * checksum, on every connection, until `honest` is set: then the batch is sound.
 */
async function hostileCacheStore(): Promise<{ url: string; behave(): void; close(): Promise<void> }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  let honest = false;
  wss.on('connection', (ws) => {
    ws.on('message', (data: Buffer) => {
      const m = decodeMessage(data, MessageSchema);
      if (m.t === 'hello') {
        ws.send(
          encodeMessage({ t: 'vms', vms: [{ vm: VM, generation: 'g1', disks: DISKS, firstLsn: 1, lastLsn: 1 }] }),
        );
      } else if (m.t === 'subscribe') {
        ws.send(encodeMessage({ t: 'stream', vm: VM, generation: 'g1', disks: DISKS, from: 1 }));
        const record: ChangeRecord = {
          lsn: 1,
          kind: RecordKind.WRITE,
          disk: 0,
          offset: 0,
          length: 4096,
          data: Buffer.alloc(4096, 7),
          ...(honest ? {} : { crc: 0xdeadbeef }),
        };
        void encodeBatch([record], { vm: VM, generation: 'g1' }).then(({ frame }) => ws.send(frame));
      }
    });
  });
  return {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`,
    behave: () => {
      honest = true;
      for (const c of wss.clients) c.terminate();
    },
    close: () =>
      new Promise((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => resolve());
      }),
  };
}

describe('GET /health', () => {
  it('reports the cache-store once it has been out of reach past --cache-store-unreachable-ms, and recovers', async () => {
    const dir = caseDir();
    // Both daemons as deployed, with credentials: the details of /health need the operator's token.
    const creds = await Credentials.create(path.join(dir, 'credentials'));
    let cacheStore: ServiceProcess = await startCacheStore(path.join(dir, 'cache'), undefined, creds.cacheStoreAuth());
    cleanups.push(() => cacheStore.stop());
    const processor = await startProcessorCli(
      path.join(dir, 'processor'),
      `ws://${cacheStore.listen}/`,
      '127.0.0.1:0',
      ['--cache-store-unreachable-ms', '500'],
      creds.processorAuth(),
    );
    cleanups.push(() => processor.stop());
    const p = processor.listen;
    const token = processor.tokenFile;
    expect(await healthBecomes(p, 200, 'a healthy answer with the cache-store up', token)).toMatchObject({
      ok: true,
      problems: [],
    });
    expect(await health(p), 'without a token, /health says only whether all is well').toEqual({
      status: 200,
      body: { ok: true },
    });

    await cacheStore.kill();
    const down = await healthBecomes(p, 503, 'a 503 after the cache-store went away', token);
    expect(down).toMatchObject({ ok: false, cacheStore: { connected: false } });
    expect(down.problems).toEqual([
      {
        code: 'SR_CACHE_STORE_UNREACHABLE',
        message: expect.stringContaining(`ws://${cacheStore.listen}/`) as unknown,
      },
    ]);
    expect(await health(p)).toEqual({ status: 503, body: { ok: false } });

    cacheStore = await startCacheStore(path.join(dir, 'cache'), cacheStore.listen, creds.cacheStoreAuth());
    expect(await healthBecomes(p, 200, 'a healthy answer once the cache-store is back', token)).toMatchObject({
      ok: true,
      cacheStore: { connected: true },
    });
  });

  it('does not report a cache-store out of reach for less than the threshold (60 s by default)', async () => {
    const processor = await inProcess(caseDir(), await deadUrl());
    const h = await health(processor.listen);
    expect(h).toEqual({
      status: 200,
      body: { ok: true, problems: [], cacheStore: { connected: false }, vms: 0, vmsInError: 0 },
    });
  });

  it('reports a VM whose stream cannot be applied, naming it, until a sound batch lands', async () => {
    const hostile = await hostileCacheStore();
    cleanups.push(() => hostile.close());
    const processor = await inProcess(caseDir(), hostile.url);
    const down = await healthBecomes(processor.listen, 503, 'a 503 for the refused stream');
    expect(down).toMatchObject({ ok: false, vms: 1, vmsInError: 1 });
    expect(down.problems).toEqual([
      { code: 'SR_APPLY_FAILING', vm: VM, message: expect.stringContaining('SR_CHECKSUM') as unknown },
    ]);

    hostile.behave();
    expect(await healthBecomes(processor.listen, 200, 'a healthy answer once the stream applies')).toMatchObject({
      ok: true,
      vmsInError: 0,
    });
  });

  it('reports a VM whose replica cannot be opened', async () => {
    const dataDir = caseDir();
    await readyReplica(dataDir, VM, DISKS);
    await fsp.writeFile(path.join(dataDir, 'replicas', VM, 'state.json'), '{"torn');
    const processor = await inProcess(dataDir, await deadUrl());
    const h = await health(processor.listen);
    expect(h.status).toBe(503);
    expect(h.body.problems).toEqual([
      { code: 'SR_REPLICA_STORE_FAILING', vm: VM, message: expect.stringContaining('state.json') as unknown },
    ]);
  });

  it('reports a VM whose recovery points cannot be cut, until a cut succeeds', async () => {
    const dataDir = caseDir();
    await readyReplica(dataDir, VM, DISKS);
    // The schedule runs only when the test says so; a cut is due every second.
    const processor = await inProcess(dataDir, await deadUrl(), {
      pointTickMs: 3_600_000,
      defaultVmConfig: { ...DEFAULT_VM_CONFIG, crashConsistentFrequencyMs: 1000 },
    });
    // A directory where the point catalog goes: every cut fails to write it.
    const catalog = path.join(dataDir, 'replicas', VM, 'points', 'points.json');
    await fsp.mkdir(catalog);
    await processor.points.tick();
    const h = await health(processor.listen);
    expect(h.status).toBe(503);
    expect(h.body.problems).toEqual([
      { code: 'SR_POINT_STORE_FAILING', vm: VM, message: expect.stringContaining(VM) as unknown },
    ]);
    // A pass with no cut due yet proves nothing: the failure stands.
    await processor.points.tick();
    expect((await health(processor.listen)).status).toBe(503);

    await fsp.rmdir(catalog);
    await until('a point cut once the catalog can be written', async () => {
      await processor.points.tick();
      return processor.status().vms[0]?.points === 1 ? true : undefined;
    });
    expect(await health(processor.listen)).toMatchObject({ status: 200, body: { ok: true, problems: [] } });
  });
});
