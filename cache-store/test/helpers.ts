import { randomBytes } from 'node:crypto';
import {
  MessageSchema,
  RecordKind,
  decodeMessage,
  encodeBatch,
  encodeMessage,
  type ChangeRecord,
} from '@site-recovery/shared';
import { WebSocket } from 'ws';

export type Message = ReturnType<typeof decodeMessage<typeof MessageSchema>>;

export const DISKS = [
  { id: 'os', size: 64 * 1024 * 1024 },
  { id: 'data', size: 16 * 1024 * 1024 },
];

/** A batch frame of `count` WRITE records starting at `first`, each `size` random (incompressible) bytes. */
export async function batchFrame(
  vm: string,
  generation: string,
  first: number,
  count: number,
  size = 4096,
): Promise<Buffer> {
  const records: ChangeRecord[] = [];
  for (let i = 0; i < count; i++) {
    const lsn = first + i;
    records.push({
      lsn,
      kind: RecordKind.WRITE,
      disk: lsn % 2,
      offset: (lsn * size) % (8 * 1024 * 1024),
      length: size,
      data: randomBytes(size),
      time: Date.now(),
    });
  }
  return (await encodeBatch(records, { vm, generation })).frame;
}

/** `n` batches of `per` records each, from LSN `first`, as [first, frame] pairs. */
export async function batches(
  vm: string,
  generation: string,
  first: number,
  n: number,
  per = 4,
  size = 4096,
): Promise<{ first: number; last: number; frame: Buffer }[]> {
  const out: { first: number; last: number; frame: Buffer }[] = [];
  for (let i = 0; i < n; i++) {
    const f = first + i * per;
    out.push({ first: f, last: f + per - 1, frame: await batchFrame(vm, generation, f, per, size) });
  }
  return out;
}

/** A test peer: a real ws client with a queue of received frames. */
export class Peer {
  private readonly frames: Buffer[] = [];
  private waiter: (() => void) | undefined;
  private closeInfo: { code: number; reason: string } | undefined;
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      this.frames.push(data);
      this.waiter?.();
    });
    ws.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        this.waiter?.();
        resolve(this.closeInfo);
      }),
    );
  }

  static open(url: string, o: { autoPong?: boolean } = {}): Promise<Peer> {
    const ws = new WebSocket(url, {
      perMessageDeflate: false,
      maxPayload: 256 * 1024 * 1024,
      autoPong: o.autoPong ?? true,
    });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new Peer(ws)));
      ws.once('error', reject);
    });
  }

  send(msg: object | Buffer): void {
    this.ws.send(Buffer.isBuffer(msg) ? msg : encodeMessage(msg), { binary: true });
  }

  get pending(): number {
    return this.frames.length;
  }

  /** The next frame received, as is. */
  async recvRaw(timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.frames.shift();
      if (f !== undefined) return f;
      if (this.closeInfo !== undefined)
        throw new Error(`connection closed (${this.closeInfo.code} ${this.closeInfo.reason}) with no more messages`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          this.waiter = undefined;
          resolve();
        };
      });
    }
  }

  async recv(timeoutMs?: number): Promise<Message> {
    return decodeMessage(await this.recvRaw(timeoutMs), MessageSchema);
  }

  /** The next message, which must be of type `t`. */
  async expect<T extends Message['t']>(t: T, timeoutMs?: number): Promise<Extract<Message, { t: T }>> {
    const m = await this.recv(timeoutMs);
    if (m.t !== t)
      throw new Error(
        `expected "${t}", got ${JSON.stringify(m, (_k, v: unknown) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v))}`,
      );
    return m as Extract<Message, { t: T }>;
  }

  /** Reads acks until one reaches `lsn`; returns the last ack seen. */
  async ackedThrough(lsn: number, timeoutMs = 20_000): Promise<number> {
    let acked = 0;
    while (acked < lsn) acked = (await this.expect('ack', timeoutMs)).lsn;
    return acked;
  }

  close(): void {
    this.ws.close();
  }
}

export function agentHello(vm: string, generation: string, disks = DISKS): object {
  return { t: 'hello', v: 1, role: 'agent', vm, generation, disks };
}

export const PROCESSOR_HELLO = { t: 'hello', v: 1, role: 'processor' };

/** `p`, or a failure naming `what` if it has not settled within `timeoutMs`. */
export async function within<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` until it returns true. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
