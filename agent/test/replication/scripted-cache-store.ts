import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  AgentHelloSchema,
  DEFAULT_WIRE_LIMITS,
  MessageSchema,
  PROTOCOL_VERSION,
  decodeBatch,
  decodeMessage,
  encodeMessage,
  lastLsn,
  type AgentHello,
  type ChangeRecord,
  type SumsRequest,
} from '@site-recovery/shared';

/**
 * A cache-store scripted by the shipper's tests: a real WebSocket server on a loopback port chosen at
 * run time, speaking the wire codec of shared/src/wire. It stands in for the real cache-store because
 * the tests must send what a correct one never does (acks past what was shipped, acks that go back,
 * positions past the journal) and hold acks back at will. Everything it receives is checked on
 * arrival (LSN order, schema, record checksums, the in-flight cap); what fails lands in `violations`,
 * and {@link ScriptedCacheStore.until} fails at once with it.
 */
export class ScriptedCacheStore {
  readonly connections: PeerConnection[] = [];

  private constructor(
    private readonly wss: WebSocketServer,
    readonly url: string,
    private readonly inFlightCap: number | undefined,
  ) {
    wss.on('connection', (ws) => this.connections.push(new PeerConnection(ws, this.inFlightCap)));
  }

  /** `inFlightCap`: bytes the peer may hold unacknowledged before it reports a violation. */
  static async start(inFlightCap?: number): Promise<ScriptedCacheStore> {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      wss.once('listening', resolve);
      wss.once('error', reject);
    });
    const { port } = wss.address() as AddressInfo;
    return new ScriptedCacheStore(wss, `ws://127.0.0.1:${port}/`, inFlightCap);
  }

  /** The `n`th connection (from 0) once its hello has arrived. */
  connection(n: number): Promise<PeerConnection> {
    return this.until(`connection ${n + 1} from the shipper to say hello`, () =>
      this.connections[n]?.hello !== undefined ? this.connections[n] : undefined,
    );
  }

  get violations(): string[] {
    return this.connections.flatMap((c, i) => c.violations.map((v) => `connection ${i + 1}: ${v}`));
  }

  /** Polls `check` until it returns a value; fails naming `what` after `timeoutMs`, or on any violation. */
  async until<T>(what: string, check: () => T | undefined | false, timeoutMs = 15_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.violations.length > 0) throw new Error(`while waiting for ${what}: ${this.violations.join('; ')}`);
      const v = check();
      if (v !== undefined && v !== false) return v;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  async close(): Promise<void> {
    for (const c of this.connections) c.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}

export interface ReceivedBatch {
  readonly first: number;
  readonly last: number;
  /** Size of the WebSocket message, as the shipper counts it against its in-flight cap. */
  readonly frameBytes: number;
  readonly records: readonly ChangeRecord[];
}

/** One connection from the shipper, seen from the cache-store's side. */
export class PeerConnection {
  hello: AgentHello | undefined;
  readonly batches: ReceivedBatch[] = [];
  readonly sumsRequests: SumsRequest[] = [];
  readonly violations: string[] = [];
  closed = false;
  private position: number | undefined;
  private acked = 0;

  constructor(
    private readonly ws: WebSocket,
    private readonly inFlightCap: number | undefined,
  ) {
    ws.on('message', (data: Buffer) => {
      try {
        this.receive(data);
      } catch (err) {
        this.violations.push((err as Error).message);
      }
    });
    ws.on('close', () => (this.closed = true));
  }

  /** The last LSN received, or the welcome position before any batch. */
  get lastLsn(): number {
    return this.batches.at(-1)?.last ?? this.position ?? 0;
  }

  /** Bytes of the batches received past the last ack this side sent. */
  get unackedBytes(): number {
    return this.batches.filter((b) => b.last > this.acked).reduce((n, b) => n + b.frameBytes, 0);
  }

  welcome(durableLsn: number): void {
    this.position = this.acked = durableLsn;
    this.ws.send(encodeMessage({ t: 'welcome', v: PROTOCOL_VERSION, durableLsn }));
  }

  /** Sends `{t:'ack', lsn}` whatever it says: the tests forge acks with it. */
  ack(lsn: number): void {
    this.acked = Math.max(this.acked, lsn);
    this.ws.send(encodeMessage({ t: 'ack', lsn }));
  }

  terminate(): void {
    this.ws.terminate();
  }

  /** Sends any message (sums as the processor's answer would arrive through the real cache-store). */
  send(message: object): void {
    this.ws.send(encodeMessage(message));
  }

  private receive(frame: Buffer): void {
    if (this.hello === undefined) {
      this.hello = decodeMessage(frame, AgentHelloSchema);
      return;
    }
    const m = decodeMessage(frame, MessageSchema);
    if (m.t === 'sums-request') {
      if (this.position === undefined) throw new Error('sums-request before the welcome');
      this.sumsRequests.push(m);
      return;
    }
    if (m.t !== 'batch') throw new Error(`an agent sent a "${m.t}" message`);
    const b = m;
    if (this.position === undefined) throw new Error(`batch at LSN ${b.first} before the welcome`);
    if (b.vm !== this.hello.vm || b.generation !== this.hello.generation)
      throw new Error(`batch for ${b.vm}/${b.generation} on the stream of ${this.hello.vm}/${this.hello.generation}`);
    if (b.first !== this.lastLsn + 1) throw new Error(`batch starts at LSN ${b.first} after LSN ${this.lastLsn}`);
    // Checks every record's checksum: a batch that decodes is one the real cache-store would keep.
    const records = decodeBatch(b, this.hello.disks, DEFAULT_WIRE_LIMITS);
    this.batches.push({ first: b.first, last: lastLsn(b), frameBytes: frame.length, records });
    if (this.inFlightCap !== undefined && this.unackedBytes > this.inFlightCap)
      throw new Error(`${this.unackedBytes} bytes unacknowledged, over the cap of ${this.inFlightCap}`);
  }
}
