import net from 'node:net';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BlockBackend } from '../../src/nbd/block-backend.js';
import { Cmd, CmdFlag, Errno, Info, Opt, Rep, REQUEST_MAGIC } from '../../src/nbd/constants.js';
import { StaticExports } from '../../src/nbd/export-registry.js';
import { minimumBlock } from '../../src/nbd/handshake.js';
import { parseRequest, validateRequest, type ExportShape } from '../../src/nbd/request.js';
import { NbdServer } from '../../src/nbd/server.js';

// A client may send any bytes. Each request header is either served, within the export and the
// limits, or refused with an errno the NBD spec (doc/proto.md) names for what is wrong with it; and a
// server fed hostile requests keeps answering and changes only what valid writes change.
// (The option haggling before it: fuzz-handshake.test.ts.)

/** Wall-clock budget of each property (SR_FUZZ_MS raises it for a longer local hunt). Default 2 s. */
const FUZZ_MS = Number(process.env['SR_FUZZ_MS'] ?? 2000);
const budget = { numRuns: 1_000_000, interruptAfterTimeLimit: FUZZ_MS };

const IHAVEOPT = 0x49484156454f5054n;
const SIMPLE_REPLY_MAGIC = 0x67446698;

interface Header {
  readonly magic: number;
  readonly flags: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly offset: bigint;
  readonly length: number;
}

const DISC: Header = { magic: REQUEST_MAGIC, flags: 0, type: Cmd.DISC, cookie: 0n, offset: 0n, length: 0 };
/** JSON.stringify replacer for headers in failure messages. */
const big = (_k: string, v: unknown): unknown => (typeof v === 'bigint' ? String(v) : v);

function encodeHeader(h: Header): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(h.magic, 0);
  b.writeUInt16BE(h.flags, 4);
  b.writeUInt16BE(h.type, 6);
  b.writeBigUInt64BE(h.cookie, 8);
  b.writeBigUInt64BE(h.offset, 16);
  b.writeUInt32BE(h.length, 24);
  return b;
}

/**
 * Flags each command may carry here: FUA on all (the spec lets a server ignore it where it means
 * nothing), NO_HOLE on WRITE_ZEROES. DF, REQ_ONE and FAST_ZERO need a negotiation this server never offers.
 */
const FLAGS_OF: Record<number, number> = {
  [Cmd.READ]: CmdFlag.FUA,
  [Cmd.WRITE]: CmdFlag.FUA,
  [Cmd.DISC]: CmdFlag.FUA,
  [Cmd.FLUSH]: CmdFlag.FUA,
  [Cmd.TRIM]: CmdFlag.FUA,
  [Cmd.CACHE]: CmdFlag.FUA,
  [Cmd.WRITE_ZEROES]: CmdFlag.FUA | CmdFlag.NO_HOLE,
};

/**
 * The errnos the spec names for what is wrong with a request (empty: nothing is, serve it). Where
 * several things are wrong the server may name any of them. BLOCK_STATUS needs structured replies,
 * which this server never agrees to, so it is as unknown as any other command.
 */
function specErrnos(h: Header, e: ExportShape): Set<number> {
  const wrong = new Set<number>();
  const allowed = FLAGS_OF[h.type];
  if (allowed === undefined || (h.flags & ~allowed) !== 0) wrong.add(Errno.EINVAL);
  if (allowed === undefined || h.type === Cmd.FLUSH || h.type === Cmd.DISC) return wrong;
  const writes = h.type === Cmd.WRITE || h.type === Cmd.WRITE_ZEROES;
  if (e.readOnly && (writes || h.type === Cmd.TRIM)) wrong.add(Errno.EPERM);
  if ((h.type === Cmd.READ || h.type === Cmd.WRITE) && h.length > e.maxPayloadBytes) wrong.add(Errno.EINVAL);
  if (h.offset + BigInt(h.length) > BigInt(e.size)) wrong.add(writes ? Errno.ENOSPC : Errno.EINVAL);
  if (h.offset % BigInt(e.alignment) !== 0n || h.length % e.alignment !== 0) wrong.add(Errno.EINVAL);
  return wrong;
}

/** Export shapes: sizes on and off 512-byte boundaries, block size agreed or not. */
const shapeArb: fc.Arbitrary<ExportShape> = fc
  .record({
    size: fc.oneof(
      fc.integer({ min: 1, max: 2 ** 50 }),
      fc.integer({ min: 1, max: 2 ** 30 }).map((n) => n * 512),
    ),
    readOnly: fc.boolean(),
    negotiated: fc.boolean(),
    maxPayloadBytes: fc.constantFrom(4096, 1 << 20, 32 << 20),
  })
  .map(({ negotiated, ...s }) => ({ ...s, alignment: negotiated ? minimumBlock(s.size) : 1 }));

/** Headers aimed at the edges of `e`: its end, its payload limit, its alignment, and beyond 2^53. */
function headerArb(e: ExportShape, maxLength = 0xffffffff): fc.Arbitrary<Header> {
  const size = BigInt(e.size);
  return fc.record({
    magic: fc.oneof({ weight: 9, arbitrary: fc.constant(REQUEST_MAGIC) }, fc.integer({ min: 0, max: 0xffffffff })),
    flags: fc.oneof(fc.constantFrom(0, 1, 2, 3, 4, 8, 16), fc.integer({ min: 0, max: 0xffff })),
    type: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 8 }) }, fc.integer({ min: 0, max: 0xffff })),
    cookie: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    offset: fc
      .oneof(
        fc.constantFrom(0n, 1n, 511n, 512n, size - 512n, size - 1n, size, size + 1n, 2n ** 53n, 2n ** 64n - 1n),
        fc.bigInt({ min: 0n, max: size + 4096n }),
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      )
      .filter((o) => o >= 0n && o < 2n ** 64n),
    length: fc
      .oneof(
        fc.constantFrom(0, 1, 512, 4096, e.maxPayloadBytes, e.maxPayloadBytes + 1, e.size, e.size + 1, 0xffffffff),
        fc.nat({ max: 2 * e.maxPayloadBytes }),
        fc.nat({ max: 0xffffffff }),
      )
      .map((n) => Math.min(n, maxLength, 0xffffffff)),
  });
}

/** Requests a client means: known commands, no stray flags, in range, aligned (refused still when read-only). */
function plausibleArb(e: ExportShape, maxLength: number): fc.Arbitrary<Header> {
  const units = Math.floor(e.size / e.alignment);
  return fc
    .record({
      type: fc.constantFrom(Cmd.READ, Cmd.WRITE, Cmd.WRITE_ZEROES, Cmd.TRIM, Cmd.FLUSH, Cmd.CACHE),
      fua: fc.boolean(),
      start: fc.nat({ max: units }),
      count: fc.nat({ max: Math.floor(maxLength / e.alignment) }),
      cookie: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    })
    .map(({ type, fua, start, count, cookie }) => ({
      magic: REQUEST_MAGIC,
      flags: fua ? CmdFlag.FUA : 0,
      type,
      cookie,
      offset: BigInt(start * e.alignment),
      length: Math.min(count, units - start) * e.alignment,
    }));
}

describe('NBD request parser and validator under fuzzing', () => {
  it('serves a header only within bounds and limits, and refuses it with an errno the spec names', () => {
    const case_ = shapeArb.chain((e) => fc.tuple(fc.constant(e), headerArb(e)));
    fc.assert(
      fc.property(case_, ([e, h]) => {
        const r = parseRequest(encodeHeader(h));
        if (h.magic !== REQUEST_MAGIC) {
          expect(r).toBeUndefined();
          return;
        }
        expect(r).toMatchObject({ flags: h.flags, type: h.type, length: h.length });
        expect(r!.cookie.readBigUInt64BE(0)).toBe(h.cookie);
        const errno = validateRequest(r!, e);
        const wrong = specErrnos(h, e);
        if (wrong.size === 0) expect(errno, 'a valid request refused').toBe(Errno.OK);
        else expect([...wrong], `answered ${errno}`).toContain(errno);
      }),
      budget,
    );
  });
});

/** An option of the haggling phase. */
function option(code: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(IHAVEOPT, 0);
  h.writeUInt32BE(code, 8);
  h.writeUInt32BE(payload.length, 12);
  return Buffer.concat([h, payload]);
}

function memoryBackend(size: number): BlockBackend & { bytes: Buffer } {
  const bytes = Buffer.alloc(size);
  return {
    bytes,
    size,
    read: (offset, length) => Promise.resolve(Buffer.from(bytes.subarray(offset, offset + length))),
    write: (offset, data) => Promise.resolve(void data.copy(bytes, offset)),
    zero: (offset, length) => Promise.resolve(void bytes.fill(0, offset, offset + length)),
    trim: (offset, length) => Promise.resolve(void bytes.fill(0, offset, offset + length)),
    flush: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
}

/** Bytes from a socket, read in exact amounts; a deadline names what never arrived. */
class Inbox {
  private buf = Buffer.alloc(0);
  private closed = false;
  private wake: () => void = () => undefined;

  constructor(socket: net.Socket) {
    socket.on('data', (d: Buffer) => ((this.buf = Buffer.concat([this.buf, d])), this.wake()));
    socket.on('close', () => ((this.closed = true), this.wake()));
    socket.on('error', () => undefined); // 'close' follows
  }

  async take(n: number, what: string, ms = 10_000): Promise<Buffer> {
    const deadline = Date.now() + ms;
    while (this.buf.length < n && !this.closed) {
      if (Date.now() > deadline) throw new Error(`${what} did not arrive within ${ms} ms`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 50);
      });
    }
    if (this.buf.length < n) throw new Error(`the server hung up before ${what}`);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  async closedBy(what: string, ms = 10_000): Promise<void> {
    for (const deadline = Date.now() + ms; !this.closed; await new Promise((r) => setTimeout(r, 10)))
      if (Date.now() > deadline) throw new Error(`the server did not hang up after ${what} within ${ms} ms`);
  }
}

const SERVED = [
  { name: 'even', size: 256 * 1024, readOnly: false },
  { name: 'odd', size: 100_003, readOnly: false },
  { name: 'ro', size: 64 * 1024, readOnly: true },
].map((e) => ({ ...e, description: e.name, backend: memoryBackend(e.size) }));
const SERVER_LIMITS = { maxPayloadBytes: 16 * 1024 };

describe('NBD server fed hostile requests', () => {
  let server: NbdServer;
  let port: number;
  beforeAll(async () => {
    server = new NbdServer({
      exports: new StaticExports(SERVED),
      log: pino({ level: 'silent' }),
      limits: SERVER_LIMITS,
    });
    ({ port } = await server.listen('127.0.0.1', 0));
  });
  afterAll(() => server.close());

  it('answers each request as the spec says, and changes only what valid writes change', async () => {
    const case_ = fc
      .record({ which: fc.nat({ max: SERVED.length - 1 }), blockSize: fc.boolean() })
      .chain(({ which, blockSize }) => {
        const e = SERVED[which]!;
        const shape = { size: e.size, readOnly: e.readOnly, maxPayloadBytes: SERVER_LIMITS.maxPayloadBytes };
        const alignment = blockSize ? minimumBlock(e.size) : 1;
        const hostile = headerArb({ ...shape, alignment }, 20 * 1024).map((h) => ({ ...h, magic: REQUEST_MAGIC }));
        const headers = fc.oneof({ weight: 2, arbitrary: plausibleArb({ ...shape, alignment }, 20 * 1024) }, hostile);
        return fc.record({
          name: fc.constant(e.name),
          shape: fc.constant({ ...shape, alignment }),
          blockSize: fc.constant(blockSize),
          requests: fc.array(headers, { maxLength: 24 }),
          fill: fc.nat({ max: 255 }),
          cuts: fc.array(fc.nat(), { maxLength: 8 }),
          ending: fc.constantFrom('disc', 'bad magic', 'hang up'),
        });
      });
    await fc.assert(
      fc.asyncProperty(case_, async ({ name: exportName, shape, blockSize, requests, fill, cuts, ending }) => {
        const e = SERVED.find((x) => x.name === exportName)!;
        // What the export must hold afterwards: what it held, with the valid writes of this run applied.
        const disk = Buffer.from(e.backend.bytes);
        const socket = net.connect({ host: '127.0.0.1', port });
        const inbox = new Inbox(socket);
        try {
          await inbox.take(18, 'the greeting');
          const name = Buffer.from(e.name);
          const go = Buffer.alloc(4 + name.length + 2 + (blockSize ? 2 : 0));
          go.writeUInt32BE(name.length, 0);
          name.copy(go, 4);
          go.writeUInt16BE(blockSize ? 1 : 0, 4 + name.length);
          if (blockSize) go.writeUInt16BE(Info.BLOCK_SIZE, 6 + name.length);
          socket.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), option(Opt.GO, go)]));
          for (let type = 0; type !== Rep.ACK;) {
            const h = await inbox.take(20, 'a reply to GO');
            type = h.readUInt32BE(12);
            expect(type === Rep.ACK || type === Rep.INFO, `GO answered with reply type ${type}`).toBe(true);
            await inbox.take(h.readUInt32BE(16), 'the body of a reply to GO');
          }

          // Send the requests (each WRITE with its payload, valid or not) up to a DISC the spec honours.
          const answered = new Map<bigint, { h: Header; wrong: Set<number>; data?: Buffer }>();
          const parts: Buffer[] = [];
          for (const [i, r] of requests.entries()) {
            const h = { ...r, cookie: BigInt(i) };
            const wrong = specErrnos(h, shape);
            parts.push(encodeHeader(h));
            if (h.type === Cmd.DISC && wrong.size === 0) break;
            let data: Buffer | undefined;
            if (h.type === Cmd.WRITE) {
              // Bytes that differ along the payload, so a READ of a shifted range does not pass for the right one.
              data = Buffer.alloc(h.length);
              for (let k = 0; k < data.length; k++) data[k] = (fill + i * 31 + k * 7 + (k >> 8)) & 0xff;
              parts.push(data);
            }
            answered.set(h.cookie, { h, wrong });
            if (wrong.size > 0) continue;
            const [at, end] = [Number(h.offset), Number(h.offset) + h.length];
            if (h.type === Cmd.WRITE) data!.copy(disk, at);
            if (h.type === Cmd.WRITE_ZEROES || h.type === Cmd.TRIM) disk.fill(0, at, end);
            if (h.type === Cmd.READ) answered.set(h.cookie, { h, wrong, data: Buffer.from(disk.subarray(at, end)) });
          }
          const stream = Buffer.concat(parts);
          const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
          for (const [from, to] of [0, ...points].map((p, i, all) => [p, all[i + 1] ?? stream.length])) {
            socket.write(stream.subarray(from, to));
            await new Promise((r) => setImmediate(r));
          }

          for (let n = answered.size; n > 0; n--) {
            const reply = await inbox.take(16, `a reply (${n} of ${answered.size} still due)`);
            expect(reply.readUInt32BE(0), 'simple reply magic').toBe(SIMPLE_REPLY_MAGIC);
            const req = answered.get(reply.readBigUInt64BE(8));
            expect(req, `a reply to cookie ${reply.readBigUInt64BE(8)}, never sent or answered twice`).toBeDefined();
            answered.delete(reply.readBigUInt64BE(8));
            const errno = reply.readUInt32BE(4);
            if (req!.wrong.size === 0) expect(errno, `errno for a valid ${JSON.stringify(req!.h, big)}`).toBe(0);
            else expect([...req!.wrong], `errno ${errno} for ${JSON.stringify(req!.h, big)}`).toContain(errno);
            if (req!.data !== undefined)
              expect(
                (await inbox.take(req!.h.length, 'READ data')).equals(req!.data),
                `data of ${JSON.stringify(req!.h, big)}`,
              ).toBe(true);
          }
          if (ending === 'disc') socket.write(encodeHeader({ ...DISC, magic: REQUEST_MAGIC }));
          if (ending === 'bad magic') socket.write(encodeHeader({ ...DISC, magic: 0x12345678 }));
          if (ending !== 'hang up') await inbox.closedBy(ending);
          expect(e.backend.bytes.equals(disk), 'the export holds what the valid writes left').toBe(true);
        } finally {
          socket.destroy();
        }
      }),
      budget,
    );
    for (const deadline = Date.now() + 10_000; server.connectionCount > 0; await new Promise((r) => setTimeout(r, 10)))
      if (Date.now() > deadline) throw new Error(`${server.connectionCount} connections still open after 10 s`);
  });
});
