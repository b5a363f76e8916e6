/** Raw-socket NBD client pieces for the fuzz tests: bytes built by hand from the spec, not by the server's code. */
import fsp from 'node:fs/promises';
import net from 'node:net';
import { nbdProtocol } from '@site-recovery/shared/nbd';
import { expect } from 'vitest';

// The protocol numbers are the server's own (shared/src/nbd/constants.ts, written from the spec); a
// wrong one there would not show here, but real clients (nbd-clients.test.ts) disagree with it at once.
const { CmdFlag, Errno } = nbdProtocol;
export const {
  NBDMAGIC,
  IHAVEOPT,
  OPTION_REPLY_MAGIC: OPT_REPLY_MAGIC,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  Opt: OPT,
  Rep: REP,
  Cmd: CMD,
} = nbdProtocol;
export const { FUA, NO_HOLE, DF } = CmdFlag;
export const { EINVAL, ENOSPC, EOVERFLOW } = Errno;
export const MAX_PAYLOAD = 32 << 20; // the maximum block size the agent advertises
export const [SIZE, SIZE_N] = [16 << 20, BigInt(16 << 20)];
/** Valid writes of the fuzz stay below this; the rest of the model disk must stay zero. */
export const WRITABLE = 6 << 20;
export const WAIT_MS = 2000;

export const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
export const u32 = (n: number): Buffer => Buffer.from([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
export const u64 = (n: bigint): Buffer =>
  Buffer.concat([u32(Number(BigInt.asUintN(64, n) >> 32n)), u32(Number(n & 0xffffffffn))]);
export const option = (opt: number, payload: Buffer = Buffer.alloc(0)): Buffer =>
  Buffer.concat([u64(IHAVEOPT), u32(opt), u32(payload.length), payload]);
export const request = (type: number, flags: number, offset: bigint, length: number, cookie: bigint): Buffer =>
  Buffer.concat([u32(REQUEST_MAGIC), u16(flags), u16(type), u64(cookie), u64(offset), u32(length)]);
export function goPayload(name: string | Buffer, infos: readonly number[] = []): Buffer {
  const n = typeof name === 'string' ? Buffer.from(name) : name;
  return Buffer.concat([u32(n.length), n, u16(infos.length), ...infos.map(u16)]);
}

/** mulberry32: a small seeded PRNG, so that a failing case replays from its seed. */
export function prng(seed: number): { int(n: number): number; bytes(n: number): Buffer; pick<T>(xs: readonly T[]): T } {
  let a = seed >>> 0;
  const int = (n: number): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
  return {
    int,
    bytes: (n) => Buffer.from(Array.from({ length: n }, () => int(256))),
    pick: (xs) => xs[int(xs.length)]!,
  };
}

/** A raw client socket that keeps what the server sent and notices when the server hangs up. */
export class Raw {
  private buf: Buffer = Buffer.alloc(0);
  hungUp = false;
  private wake: (() => void) | undefined;
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    // A reset is one way of hanging up.
    for (const e of ['end', 'close', 'error']) socket.on(e, () => ((this.hungUp = true), this.wake?.()));
  }

  static open(port: number, allowHalfOpen = false): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen }).once('error', reject);
      s.once('connect', () => resolve(new Raw(s.off('error', reject))));
    });
  }

  private tick(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => (clearTimeout(t), resolve());
    });
  }

  /** `n` bytes, or what the server did instead within `ms`: hung up or stayed silent. */
  async read(n: number, ms = WAIT_MS): Promise<Buffer | 'hangup' | 'silent'> {
    const deadline = Date.now() + ms;
    while (this.buf.length < n) {
      if (this.hungUp) return 'hangup';
      if (Date.now() >= deadline) return 'silent';
      await this.tick(deadline - Date.now());
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  async must(n: number, what: string): Promise<Buffer> {
    const r = await this.read(n);
    return Buffer.isBuffer(r)
      ? r
      : Promise.reject(
          new Error(`${what}: expected ${n} bytes, the server ${r === 'hangup' ? 'hung up' : 'stayed silent'}`),
        );
  }

  /** Everything received until the server hangs up, or is quiet for `quietMs` (it waits for more). */
  async settle(quietMs: number): Promise<{ hungUp: boolean; received: Buffer }> {
    for (const cap = Date.now() + WAIT_MS; !this.hungUp && Date.now() < cap;) {
      const had = this.buf.length;
      await this.tick(Math.min(quietMs, cap - Date.now()));
      if (this.buf.length === had && !this.hungUp) break;
    }
    const received = this.buf;
    this.buf = Buffer.alloc(0);
    return { hungUp: this.hungUp, received };
  }

  write = (b: Buffer): boolean => this.socket.writable && this.socket.write(b);
  close = (): void => void this.socket.destroy();
}

export async function greeted(port: number, allowHalfOpen = false): Promise<Raw> {
  const c = await Raw.open(port, allowHalfOpen);
  const g = await c.must(18, 'greeting');
  expect([g.readBigUInt64BE(0), g.readBigUInt64BE(8), g.readUInt16BE(16) & 1]).toEqual([NBDMAGIC, IHAVEOPT, 1]);
  return c;
}

export async function optReply(c: Raw, what: string): Promise<{ option: number; type: number; data: Buffer }> {
  const h = await c.must(20, what);
  expect(h.readBigUInt64BE(0), `${what}: option reply magic`).toBe(OPT_REPLY_MAGIC);
  expect(h.readUInt32BE(16), `${what}: reply length`).toBeLessThan(1 << 16);
  return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await c.must(h.readUInt32BE(16), what) };
}

/** Client flags 3 and GO, byte for byte; returns the connection in the transmission phase. */
export async function openExport(port: number, name: string): Promise<Raw> {
  const c = await greeted(port);
  c.write(Buffer.concat([u32(3), option(OPT.GO, goPayload(name))]));
  for (;;) {
    const r = await optReply(c, `GO ${name}`);
    expect(r.option).toBe(OPT.GO);
    if (r.type === REP.ACK) return c;
    expect(r.type, `GO ${name}: ${r.data.toString()}`).toBe(REP.INFO);
    if (r.data.readUInt16BE(0) === 0) expect(r.data.readBigUInt64BE(2)).toBe(SIZE_N);
  }
}

let nextCookie = 0x5eed0000n;
/** A cookie no other request of this run has used. */
export const newCookie = (): bigint => nextCookie++;

/** Sends one request (and payload) and reads its simple reply, checking magic and cookie. */
export async function tx(
  c: Raw,
  type: number,
  flags: number,
  offset: bigint,
  length: number,
  payload?: Buffer,
): Promise<{ errno: number; data: Buffer }> {
  const cookie = nextCookie++;
  c.write(Buffer.concat([request(type, flags, offset, length, cookie), payload ?? Buffer.alloc(0)]));
  const what = `request type ${type} flags ${flags} offset ${offset} length ${length}`;
  const h = await c.must(16, what);
  expect([h.readUInt32BE(0), h.readBigUInt64BE(8)], `${what}: reply magic and cookie`).toEqual([
    SIMPLE_REPLY_MAGIC,
    cookie,
  ]);
  const errno = h.readUInt32BE(4);
  return { errno, data: errno === 0 && type === CMD.READ ? await c.must(length, `${what}: data`) : Buffer.alloc(0) };
}

/** Errnos the spec allows for a request to this 16 MiB export (FLUSH, FUA, TRIM, WRITE_ZEROES, CACHE); empty = must succeed. */
export function acceptable(type: number, flags: number, offset: bigint, length: number): Set<number> {
  const allowed = ({ 0: FUA, 1: FUA, 3: FUA, 4: FUA, 5: FUA, 6: FUA | NO_HOLE } as Record<number, number>)[type];
  if (allowed === undefined) return new Set([EINVAL]);
  const errs = new Set<number>();
  if ((flags & ~allowed) !== 0) errs.add(EINVAL);
  if (type === CMD.FLUSH) return errs;
  if ((type === CMD.READ || type === CMD.WRITE) && length > MAX_PAYLOAD)
    errs.add(EINVAL).add(type === CMD.READ ? EOVERFLOW : EINVAL);
  if (offset + BigInt(length) > SIZE_N) errs.add(type === CMD.WRITE || type === CMD.WRITE_ZEROES ? ENOSPC : EINVAL);
  return errs;
}

export const rss = async (pid: number): Promise<number> =>
  Number(/VmRSS:\s+(\d+)/.exec(await fsp.readFile(`/proc/${pid}/status`, 'utf8'))?.[1]) * 1024;
