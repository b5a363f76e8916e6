import fc from 'fast-check';
import { WebSocket } from 'ws';
import {
  ErrorCode,
  MessageSchema,
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
  requireTools,
  startBlockWriter,
  type BlockWriter,
  type ProtectedVm,
} from '@site-recovery/test';

// Hostile frames at the real cache-store while a real agent replicates a VM that a real guest-like
// writer keeps writing: from peers with no token, another VM's token or the processor's, frames of
// any shape (garbage, lying hellos, mutated batches, frames larger than a hello). Each connection is
// refused or answered with a stable error code, and afterwards the replica equals its source and the
// real agent still streams the same generation.

/** Wall-clock budget of the property (SR_FUZZ_MS raises it for a longer local hunt). Default 5 s. */
const FUZZ_MS = Number(process.env['SR_FUZZ_MS'] ?? 5000);
const MiB = 1 << 20;
const DISK = { id: 'os', size: 16 * MiB };
const BLOCKS = 2048;
const STABLE = new Set<string>(Object.values(ErrorCode).filter((c) => c !== ErrorCode.INTERNAL));

describe('hostile frames at the cache-store during replication', () => {
  let env: ReplicationEnv;
  let vm: ProtectedVm;
  let writer: BlockWriter | undefined;
  beforeAll(async () => {
    requireTools(['nbdsh']);
    env = await ReplicationEnv.start('fuzz-stream');
    vm = await env.protect('victim01', [DISK]);
  }, 180_000);
  afterAll(async () => {
    await writer?.stop().catch(() => undefined);
    await env?.close();
  });

  it('refuses every hostile connection with a stable code; the replica still equals its source', async () => {
    const generation = (await env.agentStatus(vm)).replication!.generation;
    const tokens = {
      none: undefined,
      'another VM': await env.credentials.agentTokenFile('other01'),
      processor: env.credentials.processorTokenFile,
    };
    writer = await startBlockWriter({ uri: vm.agent.uri(DISK.id), dir: env.dir, blocks: BLOCKS, rate: 200 });

    const vmName = fc.constantFrom(vm.name, 'other01', '../victim01');
    const gen = fc.constantFrom(generation, 'attacker-generation', '');
    const disks = fc.constantFrom([DISK], [{ id: 'os', size: 2 * DISK.size }], [], [{ id: '..', size: 1 }]);
    const batch = fc
      .record({
        vm: vmName,
        generation: fc.constantFrom(generation, 'other-gen', ''),
        first: fc.oneof(fc.constantFrom(0, 1, 2), fc.nat({ max: 1_000_000 })),
        n: fc.integer({ min: 1, max: 4 }),
      })
      .chain((b) => fc.tuple(fc.constant(b), fc.array(fc.nat(), { maxLength: 3 })))
      .map(([b, flips]) => ({ ...b, flips }));
    const hello = fc
      .record({ vm: fc.constantFrom(vm.name, 'other01'), generation: fc.constantFrom(generation, 'other-gen') })
      .map((h) => ({ msg: { t: 'hello', v: 1, role: 'agent', ...h, disks: [DISK] } }));
    const frame = fc.oneof(
      fc
        .record({ vm: vmName, generation: gen, disks })
        .map((h) => ({ msg: { t: 'hello', v: 1, role: 'agent', ...h } })),
      fc.constant({ msg: { t: 'hello', v: 1, role: 'processor' } }),
      fc
        .record({ t: fc.constantFrom('applied', 'subscribe', 'ack'), vm: vmName, generation: gen, lsn: fc.nat() })
        .map((m) => ({ msg: { ...m, from: 1 } })),
      // A `t` that cannot become a string: describing the refusal must not throw (an SR_INTERNAL answer).
      fc.constant({ msg: { t: { toString: 1 } } }),
      fc.uint8Array({ maxLength: 200 }).map((b) => ({ raw: Buffer.from(b) })),
      fc.constant({ raw: Buffer.alloc(100 * 1024, 0x90) }),
      batch.map((b) => ({ batch: b })),
    );
    const connection = fc.record({
      token: fc.constantFrom(...(Object.keys(tokens) as (keyof typeof tokens)[])),
      // Mostly a well-formed hello first, so the frames after it meet a session, not the hello check.
      frames: fc
        .tuple(fc.oneof({ weight: 3, arbitrary: hello }, frame), fc.array(frame, { maxLength: 4 }))
        .map(([first, rest]) => [first, ...rest]),
    });

    await fc.assert(
      fc.asyncProperty(connection, async ({ token, frames }) => {
        const bytes: Buffer[] = [];
        for (const f of frames) {
          if ('raw' in f) bytes.push(f.raw);
          else if ('msg' in f) {
            // The processor's own token may subscribe and acknowledge: it is trusted with that.
            if (token === 'processor' && f.msg.t === 'hello' && f.msg.role === 'processor') continue;
            bytes.push(encodeMessage(f.msg));
          } else bytes.push(await hostileBatch(f.batch));
        }
        const r = await converse(env.cacheStoreUrl, tokens[token], bytes);
        if ('refused' in r) {
          expect(r.refused, r.body).toBeGreaterThanOrEqual(400);
          expect(r.refused, r.body).toBeLessThan(500);
          expect(STABLE.has((JSON.parse(r.body) as { code: string }).code), r.body).toBe(true);
          return;
        }
        for (const m of r.replies) {
          if (m.t === 'error') expect(STABLE.has(m.code ?? ''), `${m.code}: ${m.message}`).toBe(true);
        }
      }),
      {
        numRuns: 1_000_000,
        interruptAfterTimeLimit: FUZZ_MS,
        examples: [[{ token: 'another VM', frames: [{ msg: { t: { toString: 1 } } }] }]],
      },
    );

    await writer.stop();
    writer = undefined;
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
    const a = await env.agentStatus(vm);
    expect(a.replication).toMatchObject({ generation, stream: { state: 'streaming' } });
  });
});

/** A batch of a few writes, re-encoded with bytes flipped at `flips` (none: a well-formed batch). */
async function hostileBatch(b: {
  vm: string;
  generation: string;
  first: number;
  n: number;
  flips: number[];
}): Promise<Buffer> {
  const records = Array.from({ length: b.n }, (_, i) => ({
    lsn: b.first + 1 + i,
    kind: RecordKind.WRITE,
    disk: 0,
    offset: i * 4096,
    length: 4096,
    data: Buffer.alloc(4096, 0xee),
  }));
  const { frame } = await encodeBatch(records, { vm: b.vm, generation: b.generation });
  for (const at of b.flips) frame[at % frame.length]! ^= 0x5a;
  return frame;
}

type Conversation =
  | { readonly refused: number; readonly body: string }
  | { readonly replies: { t: string; code?: string; message?: string }[] };

/**
 * Opens a WebSocket proving `tokenFile` (if any), sends `frames`, then a text frame (never part of the
 * protocol, so the cache-store must end the conversation), and collects its answers until it closes.
 */
function converse(url: string, tokenFile: string | undefined, frames: Buffer[]): Promise<Conversation> {
  const headers = tokenFile === undefined ? {} : authHeaders(loadTokenFile(tokenFile), url);
  const ws = new WebSocket(url, { headers, perMessageDeflate: false });
  const replies: { t: string; code?: string; message?: string }[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.terminate();
      reject(
        new Error(`the cache-store neither refused nor closed within 15 s; it answered ${JSON.stringify(replies)}`),
      );
    }, 15_000);
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => {
        clearTimeout(timer);
        req.destroy();
        resolve({ refused: res.statusCode ?? 0, body });
      });
    });
    ws.once('open', () => {
      for (const f of frames) ws.send(f);
      ws.send('not a protocol message');
    });
    ws.on('message', (data: Buffer) => replies.push(decodeMessage(data, MessageSchema)));
    ws.once('close', () => {
      clearTimeout(timer);
      resolve({ replies });
    });
    // A reset after the cache-store's close frame is one way of hanging up; 'close' follows.
    ws.on('error', () => undefined);
  });
}
