import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireTools } from '@site-recovery/test';
import {
  newCookie,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  CMD,
  FUA,
  NO_HOLE,
  DF,
  EINVAL,
  MAX_PAYLOAD,
  SIZE,
  SIZE_N,
  WRITABLE,
  WAIT_MS,
  u32,
  request,
  prng,
  type Raw,
  openExport,
  tx,
  acceptable,
  rss,
} from './raw-nbd.js';
import { expectIntactAfterFuzzing, startFuzzAgent, type FuzzAgent } from './fuzz-agent.js';

// Requests under fuzzing, on an open export: each malformed or random request is judged against the
// spec, and the valid write-type ones go into a model of the disk that the image must match at the end.
describe('NBD requests under malformed and hostile input (raw sockets)', () => {
  let f: FuzzAgent;
  let agent: FuzzAgent['agent'];
  /** What the model disk must hold: the effect of the valid requests sent to it, nothing else. */
  const model = Buffer.alloc(SIZE);
  let modelWrites = 0;

  beforeAll(async () => {
    requireTools();
    f = await startFuzzAgent('fuzz-requests');
    agent = f.agent;
  });

  afterAll(async () => {
    await f?.cleanup();
  });

  /** Sends a request, judges the reply against the spec, and applies valid write-type requests to the model. */
  async function judge(
    c: Raw,
    name: string,
    type: number,
    flags: number,
    offset: bigint,
    length: number,
    payload?: Buffer,
  ): Promise<void> {
    const want = acceptable(type, flags, offset, length);
    const r = await tx(c, type, flags, offset, length, payload);
    if (want.size > 0) {
      expect(
        [...want],
        `${name} (type ${type} flags ${flags} offset ${offset} length ${length}): errno ${r.errno}`,
      ).toContain(r.errno);
      return;
    }
    expect(r.errno, name).toBe(0);
    const [at, end] = [Number(offset), Number(offset) + length];
    if (type === CMD.READ) expect(r.data.equals(model.subarray(at, end)), `${name}: data read back`).toBe(true);
    if (length === 0 || (type !== CMD.WRITE && type !== CMD.WRITE_ZEROES && type !== CMD.TRIM)) return;
    modelWrites++;
    if (type === CMD.WRITE) payload!.copy(model, at);
    else model.fill(0, at, end); // the agent applies TRIM as zeroes (RecordKind.TRIM)
  }

  it('rejects malformed requests with the spec errno, stays in sync and writes nothing for them', async () => {
    const c = await openExport(agent.port, 'model');
    // A payload carrying what looks like a whole WRITE request to offset 0: executing it would mean
    // the server lost track of where a payload ends.
    const evil = Buffer.alloc(64 << 10, 0xee);
    request(CMD.WRITE, 0, 0n, 4096, 0xbadn).copy(evil, 0);
    await judge(c, 'zero-length READ at 0', CMD.READ, 0, 0n, 0);
    await judge(c, 'zero-length WRITE at the end', CMD.WRITE, 0, SIZE_N, 0, Buffer.alloc(0));
    await judge(c, 'zero-length TRIM', CMD.TRIM, 0, 4096n, 0);
    await judge(c, 'zero-length WRITE_ZEROES', CMD.WRITE_ZEROES, 0, 4096n, 0);
    for (const type of [CMD.BLOCK_STATUS, 8, 9, 100, 0xffff]) await judge(c, `command type ${type}`, type, 0, 0n, 4096);
    for (const flags of [DF, 0x20, 0x8000, 0xffff]) await judge(c, `READ flags ${flags}`, CMD.READ, flags, 0n, 4096);
    await judge(c, 'WRITE with NO_HOLE', CMD.WRITE, NO_HOLE, 0n, evil.length, evil);
    await judge(c, 'WRITE with flag 0x8000', CMD.WRITE, 0x8000, 0n, evil.length, evil);
    for (const off of [SIZE_N, SIZE_N - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 64n - 2048n]) {
      for (const type of [CMD.READ, CMD.WRITE_ZEROES, CMD.TRIM, CMD.CACHE])
        await judge(c, `type ${type} at ${off}`, type, 0, off, 4096);
      await judge(c, `WRITE at ${off}`, CMD.WRITE, 0, off, evil.length, evil);
    }
    await judge(c, 'READ of 4 GiB - 1', CMD.READ, 0, 0n, 0xffffffff);
    await judge(c, 'READ of 32 MiB + 1', CMD.READ, 0, 0n, MAX_PAYLOAD + 1);
    await judge(c, 'TRIM of 4 GiB - 1', CMD.TRIM, 0, 0n, 0xffffffff);
    await judge(c, 'valid WRITE', CMD.WRITE, FUA, 4096n, 8192, Buffer.alloc(8192, 0x5a));
    // An oversized WRITE with its payload following: drained and answered with EINVAL, or a hang-up.
    const big = Buffer.alloc(MAX_PAYLOAD + 4096);
    for (let at = 0; at < big.length; at += evil.length) evil.copy(big, at);
    const cookie = newCookie();
    c.write(Buffer.concat([request(CMD.WRITE, 0, 0n, big.length, cookie), big]));
    const h = await c.read(16, 10_000);
    if (Buffer.isBuffer(h)) expect([h.readUInt32BE(4), h.readBigUInt64BE(8)]).toEqual([EINVAL, cookie]);
    else expect(h).toBe('hangup');

    // Seeded random requests, each judged against the spec; valid ones go into the model.
    const d = h === 'hangup' ? await openExport(agent.port, 'model') : c;
    const rnd = prng(7);
    const outOfRange = (len: number): bigint =>
      rnd.pick([
        SIZE_N - BigInt(len) + 1n + BigInt(rnd.int(512)),
        SIZE_N + BigInt(rnd.int(1 << 20)),
        2n ** 63n,
        2n ** 64n - 1n,
        2n ** 64n - BigInt(rnd.int(1 << 16)),
      ]);
    for (let i = 0; i < 300; i++) {
      const type = rnd.pick([
        CMD.READ,
        CMD.READ,
        CMD.WRITE,
        CMD.WRITE,
        CMD.WRITE_ZEROES,
        CMD.TRIM,
        CMD.FLUSH,
        CMD.CACHE,
        CMD.BLOCK_STATUS,
        rnd.int(0x10000),
      ]);
      if (type === CMD.DISC) continue;
      const len = type === CMD.FLUSH ? 0 : rnd.pick([1 + rnd.int(512), 512 * (1 + rnd.int(128)), 1 + rnd.int(1 << 16)]);
      const flags = type === CMD.FLUSH ? 0 : rnd.int(10) < 7 ? rnd.pick([0, 0, FUA, NO_HOLE]) : rnd.int(0x10000);
      const offset = type === CMD.FLUSH ? 0n : rnd.int(10) < 6 ? BigInt(rnd.int(WRITABLE - len)) : outOfRange(len);
      await judge(d, `random request ${i}`, type, flags, offset, len, type === CMD.WRITE ? rnd.bytes(len) : undefined);
    }
    // DISC: the server finishes and closes; nothing sent after it is executed.
    d.write(
      Buffer.concat([
        request(CMD.DISC, 0, 0n, 0, newCookie()),
        request(CMD.WRITE, 0, 0n, 4096, newCookie()),
        Buffer.alloc(4096, 0xdd),
      ]),
    );
    expect((await d.settle(WAIT_MS)).hungUp).toBe(true);
    d.close();
    expect(modelWrites).toBeGreaterThan(30);
  });

  it('hangs up on a bad request magic, and an unfinished WRITE changes nothing', async () => {
    const bad = await openExport(agent.port, 'model');
    bad.write(Buffer.concat([u32(REQUEST_MAGIC + 1), Buffer.alloc(24)]));
    expect((await bad.settle(WAIT_MS)).hungUp).toBe(true);
    bad.close();
    const truncated: [string, Buffer][] = [
      ['header only', request(CMD.WRITE, 0, 1n << 20n, 65536, 1n)],
      [
        '1000 of 65536 payload bytes',
        Buffer.concat([request(CMD.WRITE, 0, 1n << 20n, 65536, 2n), Buffer.alloc(1000, 0xcc)]),
      ],
      ['half a header', request(CMD.WRITE, 0, 1n << 20n, 65536, 3n).subarray(0, 14)],
      // Beyond the maximum: may be answered with EINVAL at once while the server drains the rest.
      [
        '4 GiB WRITE with 1 MiB of payload',
        Buffer.concat([request(CMD.WRITE, 0, 0n, 0xffffffff, 4n), Buffer.alloc(1 << 20, 0xcc)]),
      ],
    ];
    for (const [name, bytes] of truncated) {
      const c = await openExport(agent.port, 'model');
      c.write(bytes);
      // Waiting for the rest is right; answering a request that has not fully arrived is not.
      const { received } = await c.settle(300);
      if (received.length === 16)
        expect([received.readUInt32BE(0), received.readUInt32BE(4), received.readBigUInt64BE(8)], name).toEqual([
          SIMPLE_REPLY_MAGIC,
          EINVAL,
          4n,
        ]);
      else expect(received.length, name).toBe(0);
      c.close();
    }
    const c = await openExport(agent.port, 'model');
    const r = await tx(c, CMD.READ, 0, 0n, 2 << 20);
    expect(r.data.equals(model.subarray(0, 2 << 20))).toBe(true);
    c.close();
  });

  it('bounds the memory a client can pin by pipelining READs and never reading the replies', async () => {
    const pid = agent.child.pid!;
    const before = await rss(pid);
    const c = await openExport(agent.port, 'model');
    c.socket.pause();
    // 128 READs of the whole 16 MiB disk: 2 GiB of replies nobody reads.
    c.write(Buffer.concat(Array.from({ length: 128 }, (_, i) => request(CMD.READ, 0, 0n, SIZE, BigInt(i)))));
    let peak = before;
    for (let t = 0; t < 16; t++) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      peak = Math.max(peak, await rss(pid));
    }
    c.close();
    expect(peak - before, `agent RSS grew by ${(peak - before) >> 20} MiB for one connection`).toBeLessThan(512 << 20);
  });

  it('is still alive and serving real clients, and the images hold exactly what valid requests wrote', async () => {
    await expectIntactAfterFuzzing(f, model, modelWrites);
  });
});
