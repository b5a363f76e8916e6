import path from 'node:path';
import { WebSocket } from 'ws';
import {
  MessageSchema,
  isWriteTempName,
  RecordKind,
  authHeaders,
  decodeMessage,
  encodeBatch,
  encodeMessage,
  loadTokenFile,
} from '@site-recovery/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ReplicationEnv,
  authFetch,
  digestTree,
  requireTools,
  runOk,
  settledState,
  storedState,
  waitUntil,
  type ProtectedVm,
  type StoredState,
} from '@site-recovery/test';

const MiB = 1 << 20;
const DISK = { id: 'os', size: 64 * MiB };

// The attacks of issue #10 on the source region's port, replayed against the real processes with
// credentials on: someone on the network, or holding another VM's token, or the processor's name
// without its token. Each is refused, and afterwards every byte the cache-store and the processor
// store (stream, replica, points) is as it was, and the real agent and processor go on.

type Dial = { readonly ws: WebSocket } | { readonly refused: number; readonly body: string };

/** Opens a WebSocket to the cache-store, proving `tokenFile` if given; an upgrade refusal is a result. */
function dial(url: string, tokenFile?: string): Promise<Dial> {
  const headers = tokenFile === undefined ? {} : authHeaders(loadTokenFile(tokenFile), url);
  const ws = new WebSocket(url, { headers, perMessageDeflate: false });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws }));
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => {
        req.destroy();
        resolve({ refused: res.statusCode ?? 0, body });
      });
    });
    ws.once('error', reject);
  });
}

/**
 * Sends `frames` back to back, as an attacker would not wait to be told no, and collects what the
 * cache-store answers until it closes the connection.
 */
async function sendAll(ws: WebSocket, frames: readonly Buffer[]): Promise<{ replies: unknown[]; code: number }> {
  const replies: unknown[] = [];
  ws.on('message', (data: Buffer) => replies.push(decodeMessage(data, MessageSchema)));
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  for (const f of frames) ws.send(f);
  const code = await Promise.race([
    closed,
    new Promise<never>((_, reject) =>
      setTimeout(
        () => reject(new Error(`the cache-store kept the connection open; it answered ${JSON.stringify(replies)}`)),
        15_000,
      ),
    ),
  ]);
  return { replies, code };
}

const hello = (vm: string, generation: string): Buffer =>
  encodeMessage({ t: 'hello', v: 1, role: 'agent', vm, generation, disks: [DISK] });
const processorHello = encodeMessage({ t: 'hello', v: 1, role: 'processor' });

/** One batch of writes of 0xee to the first MiB of `vm`'s disk, at `first`. */
async function injected(vm: string, generation: string, first: number): Promise<Buffer> {
  const records = Array.from({ length: 16 }, (_, i) => ({
    lsn: first + i,
    kind: RecordKind.WRITE,
    disk: 0,
    offset: i * 64 * 1024,
    length: 64 * 1024,
    data: Buffer.alloc(64 * 1024, 0xee),
    time: Date.now(),
  }));
  return (await encodeBatch(records, { vm, generation })).frame;
}

describe('attacks on the cache-store, with authentication on', () => {
  let env: ReplicationEnv;
  let vm: ProtectedVm;
  let before: StoredState;
  let url: string;
  let generation: string;
  beforeAll(async () => {
    requireTools(['qemu-io']);
    env = await ReplicationEnv.start('attacks');
    vm = await env.protect('victim01', [{ ...DISK, extents: [{ offset: 0, length: 4 * MiB }] }]);
    before = await settledState(env, vm);
    url = env.cacheStoreUrl;
    generation = (await env.agentStatus(vm)).replication!.generation;
  }, 180_000);
  afterAll(async () => {
    await env?.close();
  });

  /** Everything stored is as before the attack, and the real agent still streams to the cache-store. */
  async function expectUntouched(): Promise<void> {
    expect(await storedState(env, vm)).toEqual(before);
    const a = await env.agentStatus(vm);
    expect(a.replication).toMatchObject({ generation, stream: { state: 'streaming' } });
  }

  it('a hello with a new generation and no token is refused at the upgrade (401), before any frame', async () => {
    const r = await dial(url);
    expect(r).toMatchObject({ refused: 401 });
    expect('body' in r && (JSON.parse(r.body) as { code: string }).code).toBe('SR_AUTH');
    await expectUntouched();
  });

  it('another VM’s token cannot start a new generation of this VM', async () => {
    const other = await env.credentials.agentTokenFile('other01');
    const d = await dial(url, other);
    if (!('ws' in d)) throw new Error(`the upgrade with a good agent token was refused: ${d.refused} ${d.body}`);
    const r = await sendAll(d.ws, [hello(vm.name, 'attacker-generation')]);
    expect(r.replies).toEqual([
      { t: 'error', code: 'SR_AUTH', message: expect.stringContaining('other01') as unknown },
    ]);
    expect(r.code).toBe(1008);
    await expectUntouched();
  });

  it('a rogue agent with another VM’s token cannot inject writes into the current generation', async () => {
    const durable = (before.cacheStoreVm as { durableLsn: number }).durableLsn;
    const d = await dial(url, await env.credentials.agentTokenFile('other01'));
    if (!('ws' in d)) throw new Error(`the upgrade was refused: ${d.refused}`);
    const r = await sendAll(d.ws, [hello(vm.name, generation), await injected(vm.name, generation, durable + 1)]);
    expect(r.replies).toMatchObject([{ t: 'error', code: 'SR_AUTH' }]);
    await expectUntouched();
  });

  it('the processor’s own token cannot write either', async () => {
    const d = await dial(url, env.credentials.processorTokenFile);
    if (!('ws' in d)) throw new Error(`the upgrade was refused: ${d.refused}`);
    const r = await sendAll(d.ws, [hello(vm.name, 'attacker-generation')]);
    expect(r.replies).toMatchObject([{ t: 'error', code: 'SR_AUTH' }]);
    await expectUntouched();
  });

  it('GET /status without a token (or with an agent token) hands out no generation; /health says only ok', async () => {
    const base = `http://${env.cacheStore.listen}`;
    const anon = await authFetch(`${base}/status`);
    expect(anon.status).toBe(401);
    const agent = await authFetch(`${base}/status`, { tokenFile: await env.credentials.agentTokenFile(vm.name) });
    expect(agent.status).toBe(403);
    for (const text of [await anon.text(), await agent.text()]) expect(text).not.toContain(generation);
    const health = await authFetch(`${base}/health`);
    expect(await health.json()).toEqual({ ok: true });
    await expectUntouched();
  });

  it('a fake processor (no token, or an agent token) cannot acknowledge records and get them released', async () => {
    // Records the real processor has not taken yet: it is down while the VM writes.
    await env.processor.stop();
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 8M 2M', vm.agent.uri(DISK.id)]);
    const lsn = (await env.agentStatus(vm)).lsn;
    const held = await waitUntil(
      `the cache-store to hold LSN ${lsn} for the processor`,
      async () => {
        const row = (await env.cacheStoreVm(vm.name)) as { durableLsn: number; appliedLsn: number } | undefined;
        return row !== undefined && row.durableLsn >= lsn ? row : undefined;
      },
      30_000,
    );
    expect(held.appliedLsn).toBeLessThan(held.durableLsn);
    const stream = await storedStream();

    expect(await dial(url)).toMatchObject({ refused: 401 });
    for (const token of [
      await env.credentials.agentTokenFile(vm.name),
      await env.credentials.agentTokenFile('other01'),
    ]) {
      const d = await dial(url, token);
      if (!('ws' in d)) throw new Error(`the upgrade was refused: ${d.refused}`);
      const r = await sendAll(d.ws, [
        processorHello,
        encodeMessage({ t: 'applied', vm: vm.name, generation, lsn: held.durableLsn }),
        encodeMessage({ t: 'subscribe', vm: vm.name, generation, from: 1 }),
      ]);
      // No VM list, no stream, no release: only the refusal.
      expect(r.replies).toMatchObject([{ t: 'error', code: 'SR_AUTH' }]);
    }
    expect(await env.cacheStoreVm(vm.name)).toEqual(held);
    expect(await storedStream()).toEqual(stream);

    // Nothing was lost: the real processor, back, takes every record and its replica equals the source.
    await env.startProcessor();
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
  });

  /** The cache-store's files alone (storedState asks the processor too, which is down here). */
  function storedStream(): Promise<Record<string, string>> {
    return digestTree(path.join(env.dir, 'cache-store'), isWriteTempName);
  }
});
