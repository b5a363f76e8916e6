import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireTools } from '@site-recovery/test';
import {
  IHAVEOPT,
  OPT_REPLY_MAGIC,
  OPT,
  REP,
  CMD,
  SIZE,
  SIZE_N,
  WAIT_MS,
  u16,
  u32,
  u64,
  option,
  request,
  goPayload,
  prng,
  greeted,
  optReply,
  tx,
} from './raw-nbd.js';
import { expectIntactAfterFuzzing, startFuzzAgent, type FuzzAgent } from './fuzz-agent.js';

/** Resolves once `socket` can take more data, closes, or `ms` pass, whichever comes first. */
function drainedOrClosed(socket: net.Socket, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      socket.off('drain', done).off('close', done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    socket.once('drain', done).once('close', done);
  });
}

// The handshake under fuzzing: malformed, oversized, unknown and random option streams on raw sockets.
// None of them may write anything, so the model disk stays all zero.
describe('NBD handshake under malformed and hostile input (raw sockets)', () => {
  let f: FuzzAgent;
  let agent: FuzzAgent['agent'];
  /** The model disk: no handshake writes, so all zero. */
  const model = Buffer.alloc(SIZE);

  beforeAll(async () => {
    requireTools();
    f = await startFuzzAgent('fuzz-handshake');
    agent = f.agent;
  });

  afterAll(async () => {
    await f?.cleanup();
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
      if (c.socket.writableLength > 4 << 20) await drainedOrClosed(c.socket, deadline - Date.now());
      else if (c.write(chunk) || c.socket.writable) sent++; // queued even when write() asks to wait
    }
    c.close();
    expect(sent, `MiB a refused client pushed into the agent`).toBeLessThan(64);
  });

  it('is still alive and serving real clients, and the images hold what the journal rebuilds', async () => {
    await expectIntactAfterFuzzing(f, model, 0);
  });
});
