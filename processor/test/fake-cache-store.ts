import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  MessageSchema,
  RecordKind,
  decodeMessage,
  encodeBatch,
  encodeMessage,
  recordChecksum,
  type ChangeRecord,
  type DiskInfo,
  type Progress,
} from '@site-recovery/shared';

/** What the processor sent, checked against the protocol schemas (`t: 'invalid'` if it failed them). */
export type Sent = Record<string, unknown> & { t: string };

/**
 * One connection from the processor, driven by the test: it sees every message the processor sent
 * and sends exactly the frames the test builds.
 */
export class FakeSession {
  readonly received: Sent[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: (() => void)[] = [];

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      try {
        this.received.push(decodeMessage(data, MessageSchema));
      } catch (err) {
        this.received.push({ t: 'invalid', error: (err as Error).message });
      }
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
    this.closed = new Promise((resolve) =>
      ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
  }

  /** The first message (already received or still to come) that matches. */
  async waitFor(match: (m: Sent) => boolean, timeoutMs = 10_000): Promise<Sent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.find(match);
      if (found !== undefined) return found;
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(
          `no matching message within ${timeoutMs} ms; received: ${JSON.stringify(this.received.map((m) => m.t))}`,
        );
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  send(message: object): void {
    this.ws.send(encodeMessage(message));
  }

  sendFrame(frame: Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.ws.send(frame, (err) => (err ? reject(err) : resolve())));
  }

  vms(list: { vm: string; generation: string; disks: DiskInfo[]; firstLsn: number; lastLsn: number }[]): void {
    this.send({ t: 'vms', vms: list });
  }

  stream(vm: string, generation: string, disks: DiskInfo[], from: number): void {
    this.send({ t: 'stream', vm, generation, disks, from });
  }

  async batch(vm: string, generation: string, records: readonly ChangeRecord[], progress?: Progress): Promise<void> {
    const { frame } = await encodeBatch(records, { vm, generation, ...(progress ? { progress } : {}) });
    await this.sendFrame(frame);
  }

  /** Waits until the processor has confirmed `lsn` (or more) of `vm` (of `generation`, if given). */
  appliedAtLeast(vm: string, lsn: number, generation?: string, timeoutMs = 10_000): Promise<Sent> {
    return this.waitFor(
      (m) =>
        m.t === 'applied' &&
        m['vm'] === vm &&
        (m['lsn'] as number) >= lsn &&
        (generation === undefined || m['generation'] === generation),
      timeoutMs,
    );
  }

  subscribeOf(vm: string, timeoutMs = 10_000): Promise<Sent> {
    return this.waitFor((m) => m.t === 'subscribe' && m['vm'] === vm, timeoutMs);
  }
}

/** A cache-store that speaks the documented protocol, scripted by the test, on a free port. */
export class FakeCacheStore {
  readonly sessions: FakeSession[] = [];
  /** Runs on every new connection (e.g. to serve a stream automatically). */
  onSession: ((s: FakeSession) => void) | undefined;
  private waiters: (() => void)[] = [];

  private constructor(private readonly wss: WebSocketServer) {
    wss.on('connection', (ws) => {
      const s = new FakeSession(ws);
      this.sessions.push(s);
      this.onSession?.(s);
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
  }

  static async start(): Promise<FakeCacheStore> {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 64 << 20 });
    await new Promise<void>((resolve) => wss.once('listening', resolve));
    return new FakeCacheStore(wss);
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}/`;
  }

  /** Every `applied` message of every session, in order. */
  applied(vm?: string): Sent[] {
    return this.sessions.flatMap((s) =>
      s.received.filter((m) => m.t === 'applied' && (vm === undefined || m['vm'] === vm)),
    );
  }

  /** The `index`-th connection (0-based), waiting for it if needed. */
  async session(index: number, timeoutMs = 10_000): Promise<FakeSession> {
    const deadline = Date.now() + timeoutMs;
    while (this.sessions.length <= index) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no connection #${index} within ${timeoutMs} ms (have ${this.sessions.length})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.sessions[index]!;
  }

  /** A session that has said hello and been sent the VM list. */
  async listed(index: number, list: Parameters<FakeSession['vms']>[0]): Promise<FakeSession> {
    const s = await this.session(index);
    await s.waitFor((m) => m.t === 'hello');
    s.vms(list);
    return s;
  }

  close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    return new Promise((resolve) => this.wss.close(() => resolve()));
  }
}

/** Records of a test workload, with the image they produce. */
export class Workload {
  readonly records: ChangeRecord[] = [];
  readonly images: Buffer[];

  constructor(
    readonly disks: DiskInfo[],
    private seed = 1,
  ) {
    this.images = disks.map((d) => Buffer.alloc(d.size));
  }

  get lastLsn(): number {
    return this.records.length;
  }

  write(disk: number, offset: number, length: number, time = Date.now()): ChangeRecord {
    const data = Buffer.allocUnsafe(length);
    for (let i = 0; i < length; i += 4) data.writeUInt32LE(this.rand(), i);
    return this.push({ lsn: 0, kind: RecordKind.WRITE, disk, offset, length, data, time });
  }

  /** A write of a repeated byte: compresses, so batches travel lz4. */
  fill(disk: number, offset: number, length: number, byte: number): ChangeRecord {
    return this.push({
      lsn: 0,
      kind: RecordKind.WRITE,
      disk,
      offset,
      length,
      data: Buffer.alloc(length, byte),
      time: Date.now(),
    });
  }

  zero(disk: number, offset: number, length: number): ChangeRecord {
    return this.push({ lsn: 0, kind: RecordKind.ZERO, disk, offset, length, time: Date.now() });
  }

  trim(disk: number, offset: number, length: number): ChangeRecord {
    return this.push({ lsn: 0, kind: RecordKind.TRIM, disk, offset, length, time: Date.now() });
  }

  /** An initial-copy progress marker: `done` bytes of the VM's disks copied. Changes no data. */
  sync(done: number): ChangeRecord {
    return this.push({ lsn: 0, kind: RecordKind.SYNC, disk: 0, offset: done, length: 0, time: Date.now() });
  }

  /** An app-consistent marker (the agent's point `seq`). Changes no data. */
  app(seq: number): ChangeRecord {
    return this.push({ lsn: 0, kind: RecordKind.APP, disk: 0, offset: seq, length: 0, time: Date.now() });
  }

  /** The disks as they were right after record `lsn` (replayed from the start). */
  imagesAt(lsn: number): Buffer[] {
    const imgs = this.disks.map((d) => Buffer.alloc(d.size));
    for (const r of this.records.slice(0, lsn)) {
      if (r.kind === RecordKind.WRITE) r.data!.copy(imgs[r.disk]!, r.offset);
      else if (r.kind === RecordKind.ZERO || r.kind === RecordKind.TRIM)
        imgs[r.disk]!.fill(0, r.offset, r.offset + r.length);
    }
    return imgs;
  }

  /** Records `from`..`to` (inclusive). */
  range(from: number, to: number): ChangeRecord[] {
    return this.records.slice(from - 1, to);
  }

  /** Random records of every kind, some overlapping, sizes from 512 B to `maxLength`. */
  random(count: number, maxLength = 256 * 1024): void {
    for (let i = 0; i < count; i++) {
      const disk = this.rand() % this.disks.length;
      const size = this.disks[disk]!.size;
      const length = Math.min(size, 512 * (1 + (this.rand() % (maxLength / 512))));
      const offset = 512 * (this.rand() % ((size - length) / 512 + 1));
      const k = this.rand() % 10;
      if (k < 7) this.write(disk, offset, length);
      else if (k < 9) this.zero(disk, offset, length);
      else this.trim(disk, offset, length);
    }
  }

  private push(r: ChangeRecord): ChangeRecord {
    const rec: ChangeRecord = { ...r, lsn: this.records.length + 1 };
    const withCrc: ChangeRecord = { ...rec, crc: recordChecksum(rec, rec.data) };
    this.records.push(withCrc);
    const img = this.images[r.disk]!;
    if (r.kind === RecordKind.WRITE) r.data!.copy(img, r.offset);
    else if (r.kind === RecordKind.ZERO || r.kind === RecordKind.TRIM) img.fill(0, r.offset, r.offset + r.length);
    return withCrc;
  }

  private rand(): number {
    // xorshift32: deterministic, so a failure can be replayed
    let x = this.seed;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.seed = x >>> 0;
    return this.seed;
  }
}

/** Consecutive slices of `records` of at most `size` records each. */
export function chunks<T>(records: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < records.length; i += size) out.push(records.slice(i, i + size));
  return out;
}
