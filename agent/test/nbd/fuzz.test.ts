import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  JOURNAL_CLI,
  firstDifference,
  makeImage,
  requireTools,
  runOk,
  startAgent,
  tempDir,
  type AgentProcess,
} from '@site-recovery/test';
import {
  newCookie,
  IHAVEOPT,
  OPT_REPLY_MAGIC,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  OPT,
  REP,
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
  u16,
  u32,
  u64,
  option,
  request,
  goPayload,
  prng,
  type Raw,
  greeted,
  optReply,
  openExport,
  tx,
  acceptable,
  rss,
} from './raw-nbd.js';

describe('NBD listener under malformed and hostile input (raw sockets)', () => {
  let [dir, chaos, modelImage] = ['', '', ''];
  let cleanup: (() => Promise<void>) | undefined;
  let agent: AgentProcess;
  /** What the model disk must hold: the effect of the valid requests sent to it, nothing else. */
  const model = Buffer.alloc(SIZE);
  let modelWrites = 0;

  beforeAll(async () => {
    requireTools();
    ({ dir, cleanup } = await tempDir('fuzz'));
    // "chaos" (also the default export) takes mutated streams that may hold valid writes; "model"
    // only requests this test tracks.
    [chaos, modelImage] = [path.join(dir, 'chaos.img'), path.join(dir, 'model.img')];
    for (const f of [chaos, modelImage]) await makeImage(f, SIZE);
    agent = await startAgent({
      vm: 'fuzz',
      disks: [
        { id: 'chaos', path: chaos },
        { id: 'model', path: modelImage },
      ],
      dataDir: path.join(dir, 'data'),
    });
  });

  afterAll(async () => {
    if (agent?.child.exitCode === null) await agent.kill();
    await cleanup?.();
  });

  it('hangs up at once on bad client flags, bad option magic, oversized options and unknown EXPORT_NAME', async () => {
    const opening = Buffer.concat([u32(3), u64(IHAVEOPT), u32(OPT.GO)]);
    const cases: [string, Buffer][] = [
      ['unknown client flags', u32(0xffffffff)],
      ['client flag bit 2', u32(4)],
      ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: agent\r\n\r\n')],
      ['option with bad magic', Buffer.concat([u32(3), Buffer.from('IHAVEOPX'), u32(OPT.GO), u32(0)])],
      ['option length 2^32-1', Buffer.concat([opening, u32(0xffffffff)])],
      ['option length 1 GiB', Buffer.concat([opening, u32(1 << 30)])],
      ['option length 16 MiB', Buffer.concat([opening, u32(16 << 20)])],
      ['EXPORT_NAME of an unknown export', Buffer.concat([u32(3), option(OPT.EXPORT_NAME, Buffer.from('nope'))])],
      ['EXPORT_NAME of 5000 bytes', Buffer.concat([u32(3), option(OPT.EXPORT_NAME, Buffer.alloc(5000, 0x61))])],
      ['ABORT', Buffer.concat([u32(3), option(OPT.ABORT)])],
    ];
    const outcome = async ([name, bytes]: [string, Buffer]): Promise<string> => {
      const c = await greeted(agent.port);
      c.write(bytes);
      const { hungUp } = await c.settle(WAIT_MS);
      c.close();
      return `${name}: ${hungUp ? 'hung up' : 'kept the connection'}`;
    };
    expect(await Promise.all(cases.map(outcome))).toEqual(cases.map(([name]) => `${name}: hung up`));
  });

  it('answers inconsistent, oversized and unknown options with an error reply and keeps negotiating', async () => {
    const c = await greeted(agent.port);
    c.write(u32(3));
    const bad: [string, number, Buffer][] = [
      ['GO shorter than 6 bytes', OPT.GO, Buffer.from([0, 0, 0])],
      ['GO name length beyond the payload', OPT.GO, Buffer.concat([u32(100), Buffer.from('model'), u16(0)])],
      ['GO name length 2^32-1', OPT.GO, Buffer.concat([u32(0xffffffff), Buffer.from('model'), u16(0)])],
      ['GO with 5 info requests but 1 sent', OPT.GO, Buffer.concat([u32(5), Buffer.from('model'), u16(5), u16(3)])],
      ['GO with trailing bytes', OPT.GO, Buffer.concat([goPayload('model'), u32(0)])],
      ['INFO with an odd info list', OPT.INFO, Buffer.concat([goPayload('model'), Buffer.from([1])])],
      ['INFO for a 5000-byte name', OPT.INFO, goPayload(Buffer.alloc(5000, 0x61))],
      ['GO for an unknown export', OPT.GO, goPayload('nope')],
      ['LIST with data', OPT.LIST, Buffer.from('x')],
      ['STARTTLS without TLS', OPT.STARTTLS, Buffer.alloc(0)],
      ['withdrawn PEEK_EXPORT', OPT.PEEK_EXPORT, Buffer.alloc(0)],
      ...[0, 13, 99, 0x7fffffff, 0xffffffff].map((o): [string, number, Buffer] => [
        `unknown option ${o}`,
        o,
        Buffer.from('payload'),
      ]),
    ];
    for (const [name, opt, payload] of bad) {
      c.write(option(opt, payload));
      const r = await optReply(c, name);
      expect(r.option, name).toBe(opt >>> 0);
      expect(r.type >>> 31, `${name}: reply type 0x${r.type.toString(16)}`).toBe(1);
      if (name === 'GO for an unknown export') expect(r.type).toBe(REP.ERR_UNKNOWN);
    }
    c.write(option(OPT.LIST));
    const listed: string[] = [];
    for (let r = await optReply(c, 'LIST'); r.type !== REP.ACK; r = await optReply(c, 'LIST')) {
      expect(r.type).toBe(REP.SERVER);
      listed.push(r.data.toString('utf8', 4, 4 + r.data.readUInt32BE(0)));
    }
    expect(listed.sort()).toEqual(['chaos', 'model']);
    // After all that, GO still works and the connection carries requests.
    c.write(option(OPT.GO, goPayload('model')));
    while ((await optReply(c, 'GO')).type !== REP.ACK);
    const r = await tx(c, CMD.READ, 0, 0n, 4096);
    expect([r.errno, r.data.equals(model.subarray(0, 4096))]).toEqual([0, true]);
    c.close();

    // 1100 options in one burst: each answered, or a hang-up once past the server's limit; no hang.
    const many = await greeted(agent.port);
    many.write(Buffer.concat([u32(3), ...Array.from({ length: 1100 }, () => option(99))]));
    const { hungUp, received } = await many.settle(500);
    many.close();
    let replies = 0;
    for (let at = 0; at < received.length; at += 20 + received.readUInt32BE(at + 16), replies++) {
      expect(received.readBigUInt64BE(at)).toBe(OPT_REPLY_MAGIC);
    }
    expect(hungUp || replies === 1100, `${replies} replies, ${hungUp ? 'then a hang-up' : 'then silence'}`).toBe(true);
    expect(replies).toBeGreaterThan(0);
  });

  it('ends each of 300 seeded random handshake streams with well-formed replies, a hang-up or a wait', async () => {
    const rnd = prng(20240611);
    const valid = Buffer.concat([u32(3), option(OPT.GO, goPayload('chaos', [3])), request(CMD.READ, 0, 0n, 512, 1n)]);
    const streams = Array.from({ length: 300 }, (_, i): Buffer => {
      if (i % 4 === 0) return rnd.bytes(rnd.int(200));
      if (i % 4 === 1) return Buffer.concat([u32(3), rnd.bytes(rnd.int(100))]);
      if (i % 4 === 2) {
        const [len, opt] = [rnd.int(64), rnd.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, rnd.int(2 ** 32)])];
        return Buffer.concat([
          u32(3),
          u64(IHAVEOPT),
          u32(opt),
          u32(len),
          rnd.bytes(Math.max(0, len + rnd.int(16) - 8)),
        ]);
      }
      const b = Buffer.from(valid); // a good handshake with 1-4 bytes replaced
      for (let k = 1 + rnd.int(4); k > 0; k--) b[rnd.int(b.length)] = rnd.int(256);
      return b;
    });
    const outcome = { hungUp: 0, waiting: 0, replied: 0 };
    const violations: string[] = [];
    const one = async (i: number): Promise<void> => {
      const c = await greeted(agent.port);
      c.write(streams[i]!);
      const { hungUp, received } = await c.settle(300);
      c.close();
      outcome[hungUp ? 'hungUp' : 'waiting']++;
      if (received.length > 0) outcome.replied++;
      // Every reply must be framed with the option reply magic until the handshake ends (ACK of GO,
      // or the EXPORT_NAME answer, which starts with the export size).
      for (let at = 0; at < received.length;) {
        if (received.length - at >= 8 && received.readBigUInt64BE(at) === SIZE_N) break;
        if (received.length - at < 20 || received.readBigUInt64BE(at) !== OPT_REPLY_MAGIC) {
          violations.push(
            `stream ${i} ${streams[i]!.toString('hex')}: bad reply at byte ${at}: ${received.subarray(at, at + 20).toString('hex')}`,
          );
          break;
        }
        const done = received.readUInt32BE(at + 8) === OPT.GO && received.readUInt32BE(at + 12) === REP.ACK;
        at += 20 + received.readUInt32BE(at + 16);
        if (done) break;
      }
    };
    for (let i = 0; i < streams.length; i += 30) await Promise.all(streams.slice(i, i + 30).map((_, k) => one(i + k)));
    expect(violations).toEqual([]);
    // The mix must reach all three outcomes, or the generator no longer tests what it claims to.
    expect(outcome.hungUp).toBeGreaterThan(100);
    expect(outcome.waiting).toBeGreaterThan(10);
    expect(outcome.replied).toBeGreaterThan(20);
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

  it('drops a client it has refused instead of buffering what that client keeps sending', async () => {
    const c = await greeted(agent.port, true);
    c.write(u32(0x80000000)); // refused: unknown client flag
    // Keep sending on our half of the connection after the refusal, as a hostile client would. A
    // server that closed the connection (or at least stopped reading) stalls this within a few MiB
    // of socket buffers; one that keeps reading into memory takes all of it.
    const chunk = Buffer.alloc(1 << 20, 0x41);
    let sent = 0;
    const deadline = Date.now() + 4000;
    while (sent < 256 && c.socket.writable && Date.now() < deadline) {
      if (c.socket.writableLength > 4 << 20) await new Promise((resolve) => setTimeout(resolve, 20));
      else if (c.write(chunk) || c.socket.writable) sent++; // queued even when write() asks to wait
    }
    c.close();
    expect(sent, `MiB a refused client pushed into the agent`).toBeLessThan(64);
  });

  it('is still alive and serving real clients, and the images hold exactly what valid requests wrote', async () => {
    expect([agent.child.exitCode, agent.child.signalCode]).toEqual([null, null]);
    expect((await runOk('nbdinfo', ['--size', agent.uri('model')])).stdout.trim()).toBe(String(SIZE));
    await runOk('qemu-io', ['-r', '-f', 'raw', '-c', `read -P 0 ${WRITABLE} ${SIZE - WRITABLE}`, agent.uri('model')]);
    await runOk('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 64k', agent.uri('chaos')]);
    expect(await agent.stop()).toBe(0);

    const onDisk = await fsp.readFile(modelImage);
    expect(
      onDisk.equals(model) ? -1 : onDisk.findIndex((b, i) => b !== model[i]),
      'first byte of the model image no valid request explains',
    ).toBe(-1);
    const dataDir = path.join(dir, 'data');
    const v = JSON.parse((await runOk('node', [JOURNAL_CLI, 'verify', '--data-dir', dataDir])).stdout) as {
      records: number;
      lastLsn: number;
      disks: { id: string; records: number }[];
    };
    expect(v.records).toBe(v.lastLsn);
    expect(
      v.disks.find((x) => x.id === 'model')?.records,
      'journal records of the model disk = valid non-empty writes',
    ).toBe(modelWrites);

    // Under all of it the journal still rebuilds both images exactly.
    const [rc, rm] = [path.join(dir, 'replay-chaos.img'), path.join(dir, 'replay-model.img')];
    for (const f of [rc, rm]) await makeImage(f, SIZE);
    await runOk('node', [
      JOURNAL_CLI,
      'replay',
      '--data-dir',
      dataDir,
      '--disk',
      `chaos=${rc}`,
      '--disk',
      `model=${rm}`,
    ]);
    expect(await firstDifference(rc, chaos)).toBe(-1);
    expect(await firstDifference(rm, modelImage)).toBe(-1);
  });
});
