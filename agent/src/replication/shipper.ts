import WebSocket from 'ws';
import {
  AgentInboundSchema,
  BatchScratch,
  DEFAULT_WIRE_LIMITS,
  ErrorCode,
  ErrorMessageSchema,
  PROTOCOL_VERSION,
  RecordKind,
  SrError,
  WelcomeSchema,
  decodeMessage,
  encodeBatch,
  encodeMessage,
  type ChangeRecord,
  type DiskInfo,
  type Logger,
  type WireLimits,
} from '@site-recovery/shared';
import { CompressionGate } from './compression-gate.js';
import type { Journal, JournalCursor } from '../journal/journal.js';

export interface ShipperOptions {
  /** ws:// URL of the cache-store. */
  readonly url: string;
  readonly vm: string;
  readonly generation: string;
  readonly disks: readonly DiskInfo[];
  readonly journal: Journal;
  readonly log: Logger;
  /** Sent in HELLO; checked by the cache-store once authentication lands. */
  readonly credential?: string;
  /** Called with the cumulative LSN the cache-store has made durable. */
  readonly onAcked: (lsn: number) => void;
  /**
   * Where the journal ended when the agent started without having had the cache-store's position
   * checked since (ReplicationState.unconfirmedFromLsn). Default: the journal's last LSN now.
   */
  readonly startLsn?: number;
  /** Told once, when the cache-store's position has been checked and the stream continues from it. */
  readonly onPositionConfirmed?: () => void;
  /** Called when the processor's policy arrives (relayed by the cache-store). */
  readonly onPolicy?: (appConsistentFrequencyMs: number) => void;
  readonly limits?: Partial<ShipperLimits>;
}

/** Limits of the shipper, with their defaults. */
export interface ShipperLimits {
  /** Payload bytes per batch (one journal read). Default 4 MiB. */
  readonly batchBytes: number;
  /** Records per batch. Default 16 384 (the wire allows 65 536). */
  readonly batchRecords: number;
  /** Bytes sent and not yet acknowledged; sending pauses beyond it. Default 64 MiB. */
  readonly inFlightBytes: number;
  /** First reconnect delay; doubles per failure up to `reconnectMaxMs`, with jitter. Default 200 ms. */
  readonly reconnectMinMs: number;
  /** Default 5 s. */
  readonly reconnectMaxMs: number;
  /** Time allowed for the connection and the welcome. Default 10 s. */
  readonly connectTimeoutMs: number;
}

const DEFAULTS: ShipperLimits = {
  batchBytes: 4 * 1024 * 1024,
  batchRecords: 16_384,
  inFlightBytes: 64 * 1024 * 1024,
  reconnectMinMs: 200,
  reconnectMaxMs: 5000,
  connectTimeoutMs: 10_000,
};

export interface ShipperStatus {
  readonly url: string;
  readonly state: 'connecting' | 'streaming' | 'waiting' | 'failed' | 'stopped';
  readonly ackedLsn: number;
  readonly sentLsn: number;
  readonly inFlightBytes: number;
  readonly bytesSent: number;
  readonly rawBytesSent: number;
  readonly reconnects: number;
  readonly lastError: string | undefined;
}

/**
 * Streams the journal to the cache-store: HELLO, then batches from the cache-store's durable
 * position, at most `inFlightBytes` unacknowledged. On any failure it reconnects with backoff and
 * resumes from what the cache-store reports durable, so nothing is skipped and nothing is applied
 * twice out of order.
 */
export class Shipper {
  private readonly limits: ShipperLimits;
  private readonly wire: WireLimits = DEFAULT_WIRE_LIMITS;
  private state: ShipperStatus['state'] = 'connecting';
  private acked = 0;
  private sent = 0;
  private inFlight = 0;
  private bytesSent = 0;
  private rawBytesSent = 0;
  private reconnects = 0;
  private lastError: string | undefined;
  private stopped = false;
  private ws: WebSocket | undefined;
  private cursor: JournalCursor | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly totalBytes: number;
  /**
   * The journal's last LSN when the agent started (before serving the VM; see ShipperOptions.startLsn),
   * and the highest LSN shipped since. The cache-store can only rightly hold LSNs up to one of them:
   * more means it holds records this journal lost in a crash, and the VM's writes since then took
   * those LSNs again with other data.
   */
  private readonly startLsn: number;
  private shippedMax = 0;
  private confirmed = false;

  constructor(private readonly o: ShipperOptions) {
    this.startLsn = Math.min(o.startLsn ?? Infinity, o.journal.lastLsn);
    this.limits = { ...DEFAULTS, ...o.limits };
    this.totalBytes = o.disks.reduce((n, d) => n + d.size, 0);
  }

  start(): void {
    this.connect(0);
  }

  status(): ShipperStatus {
    return {
      url: this.o.url,
      state: this.state,
      ackedLsn: this.acked,
      sentLsn: this.sent,
      inFlightBytes: this.inFlight,
      bytesSent: this.bytesSent,
      rawBytesSent: this.rawBytesSent,
      reconnects: this.reconnects,
      lastError: this.lastError,
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.state = 'stopped';
    clearTimeout(this.retryTimer);
    this.cursor?.close();
    const ws = this.ws;
    if (ws !== undefined && ws.readyState !== WebSocket.CLOSED) {
      await new Promise<void>((resolve) => {
        ws.once('close', () => resolve());
        ws.close(1001, 'agent stopping');
        setTimeout(() => (ws.terminate(), resolve()), 2000).unref();
      });
    }
  }

  private connect(failures: number): void {
    if (this.stopped) return;
    this.state = 'connecting';
    const ws = new WebSocket(this.o.url, {
      perMessageDeflate: false,
      maxPayload: this.wire.maxFrameBytes,
      handshakeTimeout: this.limits.connectTimeoutMs,
      // A zero masking key makes ws skip masking: client masking protects browsers' intermediaries
      // from cache poisoning, which does not apply to this link, and it costs a pass over every byte.
      generateMask: (mask: Buffer) => void mask.fill(0),
    });
    this.ws = ws;
    let welcomed = false;
    const welcomeTimer = setTimeout(() => ws.terminate(), this.limits.connectTimeoutMs);
    ws.on('open', () => {
      ws.send(
        encodeMessage({
          t: 'hello',
          v: PROTOCOL_VERSION,
          role: 'agent',
          vm: this.o.vm,
          generation: this.o.generation,
          disks: this.o.disks,
          ...(this.o.credential ? { credential: this.o.credential } : {}),
        }),
      );
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      try {
        if (!isBinary) throw new SrError(ErrorCode.PROTOCOL, 'text frame from the cache-store');
        if (!welcomed) {
          const w = decodeMessage(data, WelcomeSchema.or(ErrorMessageSchema));
          if (w.t === 'error') throw new SrError(ErrorCode.PROTOCOL, `cache-store refused: ${w.code}: ${w.message}`);
          welcomed = true;
          clearTimeout(welcomeTimer);
          failures = 0;
          this.onWelcome(ws, w.durableLsn);
          return;
        }
        const m = decodeMessage(data, AgentInboundSchema);
        if (m.t === 'error') throw new SrError(ErrorCode.PROTOCOL, `cache-store error: ${m.code}: ${m.message}`);
        if (m.t === 'policy') {
          if (m.vm === this.o.vm) this.o.onPolicy?.(m.appConsistentFrequencyMs);
          return;
        }
        this.onAck(m.lsn);
      } catch (err) {
        this.lastError = (err as Error).message;
        this.o.log.warn({ err: this.lastError }, 'replication stream error');
        ws.terminate();
      }
    });
    ws.on('error', (err) => {
      this.lastError = err.message;
    });
    ws.on('close', () => {
      clearTimeout(welcomeTimer);
      this.windowOpen?.();
      this.cursor?.close();
      this.cursor = undefined;
      this.inFlight = 0;
      if (this.stopped || this.state === 'failed') return;
      this.state = 'waiting';
      this.reconnects++;
      const delay =
        Math.min(this.limits.reconnectMaxMs, this.limits.reconnectMinMs * 2 ** failures) * (0.5 + Math.random() / 2);
      this.retryTimer = setTimeout(() => this.connect(failures + 1), delay);
    });
  }

  private onWelcome(ws: WebSocket, durable: number): void {
    const j = this.o.journal;
    if (durable > Math.max(this.startLsn, this.shippedMax) || durable + 1 < j.firstLsn) {
      // The cache-store's position is not one our journal continues from: continuity is lost.
      this.state = 'failed';
      const held = Math.max(this.startLsn, this.shippedMax);
      const why =
        durable > held
          ? `but this journal reached only LSN ${held} (a crash cut its unsynced tail)`
          : `but this journal starts at LSN ${j.firstLsn}`;
      this.lastError = `${ErrorCode.SEQUENCE}: cache-store holds LSN ${durable} of generation ${this.o.generation}, ${why}; restart the agent with --resync to start a new generation`;
      this.o.log.error(this.lastError);
      ws.close(1011, 'continuity lost');
      return;
    }
    this.state = 'streaming';
    if (!this.confirmed) {
      this.confirmed = true;
      this.o.onPositionConfirmed?.();
    }
    this.onAck(durable);
    this.sent = durable;
    this.cursor = j.cursor(durable + 1);
    void this.pump(ws, this.cursor).catch((err: unknown) => {
      this.lastError = (err as Error).message;
      this.o.log.error({ err: this.lastError }, 'reading the journal for shipping failed');
      ws.terminate();
    });
  }

  private onAck(lsn: number): void {
    if (lsn < this.acked) return;
    this.acked = lsn;
    const done = this.unacked.filter((b) => b.last <= lsn);
    this.unacked = this.unacked.filter((b) => b.last > lsn);
    for (const b of done) this.inFlight -= b.bytes;
    this.windowOpen?.();
    this.o.onAcked(lsn);
  }

  private unacked: { last: number; bytes: number }[] = [];
  private windowOpen: (() => void) | undefined;

  private async pump(ws: WebSocket, cursor: JournalCursor): Promise<void> {
    this.unacked = [];
    // This pump encodes one batch at a time, so one scratch serves all of its batches.
    const scratch = new BatchScratch();
    const gate = new CompressionGate();
    while (ws.readyState === WebSocket.OPEN && this.cursor === cursor) {
      while (this.inFlight >= this.limits.inFlightBytes && ws.readyState === WebSocket.OPEN) {
        // Woken by an ack, or by the connection closing (see the 'close' handler).
        await new Promise<void>((resolve) => (this.windowOpen = resolve));
        this.windowOpen = undefined;
      }
      const records = await cursor.next(this.limits.batchBytes);
      for (let i = 0; i < records.length && ws.readyState === WebSocket.OPEN; i += this.limits.batchRecords) {
        const part =
          records.length <= this.limits.batchRecords ? records : records.slice(i, i + this.limits.batchRecords);
        const tryCompress = gate.shouldTry();
        const { frame, raw, compressed } = await encodeBatch(
          part,
          { vm: this.o.vm, generation: this.o.generation, tryCompress, ...this.progressOf(part) },
          scratch,
        );
        if (tryCompress) gate.record(compressed);
        if (ws.readyState !== WebSocket.OPEN || this.cursor !== cursor) return;
        ws.send(frame);
        const last = part[part.length - 1]!.lsn;
        this.unacked.push({ last, bytes: frame.length });
        this.inFlight += frame.length;
        this.bytesSent += frame.length;
        this.rawBytesSent += raw;
        this.sent = last;
        this.shippedMax = Math.max(this.shippedMax, last);
      }
    }
  }

  /** Progress of the initial copy, when the batch carries one of its markers. */
  private progressOf(records: readonly ChangeRecord[]): { progress?: { done: number; total: number } } {
    for (let i = records.length - 1; i >= 0; i--) {
      const r = records[i]!;
      if (r.kind === RecordKind.SYNC) return { progress: { done: r.offset, total: this.totalBytes } };
    }
    return {};
  }
}
