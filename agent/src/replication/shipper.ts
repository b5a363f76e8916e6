import WebSocket from 'ws';
import {
  AgentInboundSchema,
  Backoff,
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
  isSrError,
  type ChangeRecord,
  type SumsRequest,
  type WireLimits,
} from '@site-recovery/shared';
import { dialCacheStore, type DialRefusal } from './cache-store-dial.js';
import {
  DEFAULT_SHIPPER_LIMITS,
  bandwidthBurstBytes,
  type ShipperLimits,
  type ShipperOptions,
  type ShipperStatus,
} from './shipper-options.js';
import { CompressionGate } from './compression-gate.js';
import { TokenBucket } from './token-bucket.js';
import type { JournalCursor } from '../journal/journal.js';

export type { BandwidthStatus, ShipperLimits, ShipperOptions, ShipperStatus } from './shipper-options.js';

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
  /** Batches sent on the current connection and not yet acknowledged, oldest first. */
  private unacked: { last: number; bytes: number }[] = [];
  /** Wakes the pump waiting for room in the window (an ack, or the connection closing). */
  private windowOpen: (() => void) | undefined;
  private windowFull = false;
  private bytesSent = 0;
  private rawBytesSent = 0;
  private reconnects = 0;
  private lastError: string | undefined;
  private refused: ShipperStatus['refused'];
  private stopped = false;
  private ws: WebSocket | undefined;
  private cursor: JournalCursor | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly backoff: Backoff;
  /** The bandwidth limit; undefined without one. */
  private readonly bucket: TokenBucket | undefined;
  /** Payload bytes per journal read: the batch size, or the limit's burst when it is smaller. */
  private readonly readBytes: number;
  /**
   * The last connection ended in a protocol error and no ack has advanced since: the next welcome does
   * not reset the backoff, so a cache-store that welcomes and then misbehaves is not redialled at the
   * shortest delay forever.
   */
  private faulted = false;
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
  /** Sent on every welcome until cleared: the cache-store relays it, the processor answers (checksum resync). */
  private sumsRequest: SumsRequest | undefined;

  constructor(private readonly o: ShipperOptions) {
    this.startLsn = Math.min(o.startLsn ?? Infinity, o.journal.lastLsn);
    this.limits = { ...DEFAULT_SHIPPER_LIMITS, ...o.limits };
    this.backoff = new Backoff({
      initialDelayMs: this.limits.reconnectMinMs,
      maxDelayMs: this.limits.reconnectMaxMs,
      jitter: 0.5,
    });
    this.totalBytes = o.disks.reduce((n, d) => n + d.size, 0);
    const rate = this.limits.maxBytesPerSecond;
    this.bucket = rate > 0 ? new TokenBucket(rate, bandwidthBurstBytes(this.limits)) : undefined;
    this.readBytes = Math.min(this.limits.batchBytes, this.bucket?.burstBytes ?? Infinity);
  }

  start(): void {
    this.connect();
  }

  status(): ShipperStatus {
    return {
      url: this.o.url,
      state: this.state,
      ackedLsn: this.acked,
      sentLsn: this.sent,
      inFlightBytes: this.inFlight,
      windowFull: this.windowFull,
      bytesSent: this.bytesSent,
      rawBytesSent: this.rawBytesSent,
      bandwidth:
        this.bucket !== undefined
          ? {
              limitBytesPerSecond: this.bucket.bytesPerSecond,
              burstBytes: this.bucket.burstBytes,
              ...this.bucket.status(),
            }
          : { limitBytesPerSecond: 0, burstBytes: 0, held: false, heldMs: 0 },
      reconnects: this.reconnects,
      lastError: this.lastError,
      ...(this.refused !== undefined ? { refused: this.refused } : {}),
    };
  }

  /**
   * Asks for the replica's block sums now, if the stream is up, and again after every reconnection
   * until called with `undefined`: an answer cut by a lost connection is asked for afresh.
   */
  requestSums(request: SumsRequest | undefined): void {
    this.sumsRequest = request;
    this.sendSumsRequest();
  }

  private sendSumsRequest(): void {
    const ws = this.ws;
    if (this.sumsRequest === undefined || this.state !== 'streaming' || ws?.readyState !== WebSocket.OPEN) return;
    ws.send(encodeMessage(this.sumsRequest));
    this.o.onSumsRequestSent?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.state = 'stopped';
    clearTimeout(this.retryTimer);
    this.bucket?.interrupt();
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

  private connect(): void {
    if (this.stopped) return;
    this.state = 'connecting';
    let refusedNow = false;
    const ws = dialCacheStore(
      {
        url: this.o.url,
        maxPayload: this.wire.maxFrameBytes,
        handshakeTimeoutMs: this.limits.connectTimeoutMs,
        ...(this.o.token !== undefined ? { token: this.o.token } : {}),
        ...(this.o.tlsCa !== undefined ? { tlsCa: this.o.tlsCa } : {}),
      },
      (r) => {
        refusedNow = true;
        this.onRefused(r);
      },
    );
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
          ...(this.o.group !== undefined ? { group: this.o.group } : {}),
          ...(this.o.mode !== undefined ? { mode: this.o.mode } : {}),
        }),
      );
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (ws !== this.ws) return; // a replaced connection's last frames say nothing about this one
      try {
        if (!isBinary) throw new SrError(ErrorCode.PROTOCOL, 'text frame from the cache-store');
        if (!welcomed) {
          const w = decodeMessage(data, WelcomeSchema.or(ErrorMessageSchema));
          if (w.t === 'error') {
            if (w.code === ErrorCode.AUTH) this.onRefused({ code: w.code, message: w.message });
            throw new Error(`cache-store refused: ${w.code}: ${w.message}`);
          }
          welcomed = true;
          clearTimeout(welcomeTimer);
          this.onWelcome(ws, w.durableLsn);
          return;
        }
        const m = decodeMessage(data, AgentInboundSchema);
        if (m.t === 'error') throw new Error(`cache-store error: ${m.code}: ${m.message}`);
        if (m.t === 'policy') {
          if (m.vm === this.o.vm) this.o.onPolicy?.(m.appConsistentFrequencyMs, m.multiVmFrequencyMs);
          return;
        }
        if (m.t === 'sums' || m.t === 'sums-end') {
          if (m.vm !== this.o.vm || m.generation !== this.o.generation) return;
          const backlog = this.o.onSums?.(m);
          if (backlog !== undefined) {
            ws.pause();
            void backlog.finally(() => ws.resume());
          }
          return;
        }
        this.onAck(m.lsn);
      } catch (err) {
        this.faulted = true;
        this.fail(ws, err, 'replication stream error');
      }
    });
    ws.on('error', (err) => {
      // The refusal says why; the error that follows only says the dial was cut short.
      if (!refusedNow) this.lastError = err.message;
    });
    ws.on('close', () => {
      clearTimeout(welcomeTimer);
      this.windowOpen?.();
      this.bucket?.interrupt();
      this.cursor?.close();
      this.cursor = undefined;
      if (this.stopped || this.state === 'failed') return;
      this.state = 'waiting';
      this.reconnects++;
      this.retryTimer = setTimeout(() => this.connect(), this.backoff.next());
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
    if (!this.faulted) this.backoff.reset();
    if (this.refused !== undefined)
      this.o.log.info({ url: this.o.url }, 'the cache-store accepts the credential again');
    this.refused = undefined;
    this.state = 'streaming';
    if (!this.confirmed) {
      this.confirmed = true;
      this.o.onPositionConfirmed?.();
    }
    if (durable < this.acked)
      this.o.log.warn(
        { durableLsn: durable, ackedLsn: this.acked },
        'the cache-store holds less than it acknowledged before; shipping again from its position',
      );
    // Acks count from here: what an earlier connection had in flight is either in `durable` or sent again.
    this.acked = this.sent = durable;
    this.unacked = [];
    this.inFlight = 0;
    this.o.onAcked(durable);
    this.sendSumsRequest();
    this.cursor = j.cursor(durable + 1);
    void this.pump(ws, this.cursor).catch((err: unknown) =>
      this.fail(ws, err, 'reading the journal for shipping failed', 'error'),
    );
  }

  /**
   * A cumulative ack. The cache-store can only have made durable what it was sent (or held at the
   * welcome), so an ack past that or behind an earlier one is refused (DESIGN.md invariant 6): the
   * caller closes the connection and nothing is released on its word.
   */
  private onAck(lsn: number): void {
    if (lsn > this.sent)
      throw new SrError(
        ErrorCode.PROTOCOL,
        `cache-store acknowledged LSN ${lsn}, but this connection shipped only through LSN ${this.sent}; nothing is released on an acknowledgement of records never sent`,
      );
    if (lsn < this.acked)
      throw new SrError(
        ErrorCode.PROTOCOL,
        `cache-store acknowledged LSN ${lsn} after LSN ${this.acked}; acknowledgements are cumulative and never go back`,
      );
    if (lsn === this.acked) return;
    this.acked = lsn;
    this.faulted = false;
    this.backoff.reset();
    while (this.unacked.length > 0 && this.unacked[0]!.last <= lsn) this.inFlight -= this.unacked.shift()!.bytes;
    this.windowOpen?.();
    this.o.onAcked(lsn);
  }

  /**
   * The cache-store would not take the connection. A refused credential is logged as an error once
   * per distinct refusal (a revoked token is refused on every dial; the status carries it meanwhile).
   */
  private onRefused(r: DialRefusal): void {
    const at = r.status !== undefined ? `HTTP ${r.status} to the upgrade` : 'an error to the hello';
    this.lastError = `${r.code}: the cache-store refused this agent (${at}): ${r.message}`;
    if (r.code !== ErrorCode.AUTH && r.status !== 401 && r.status !== 403) {
      this.o.log.warn({ url: this.o.url, status: r.status, code: r.code, err: r.message }, 'connection refused');
      return;
    }
    const same = this.refused !== undefined && this.refused.code === r.code && this.refused.message === r.message;
    if (!same) {
      this.o.log.error(
        { url: this.o.url, status: r.status, code: r.code, err: r.message },
        'the cache-store refuses this agent; retrying with backoff (check the token: its VM, expiry, revocation, and the cache-store secret it was issued with)',
      );
    }
    this.refused = { since: same ? this.refused!.since : new Date().toISOString(), ...r };
  }

  /** Records the failure and drops the connection; the 'close' handler reconnects. */
  private fail(ws: WebSocket, err: unknown, what: string, level: 'warn' | 'error' = 'warn'): void {
    const message = err instanceof Error ? err.message : String(err);
    this.lastError = isSrError(err) ? `${err.code}: ${message}` : message;
    this.o.log[level]({ err: this.lastError }, what);
    ws.terminate();
  }

  private async pump(ws: WebSocket, cursor: JournalCursor): Promise<void> {
    // This pump encodes one batch at a time, so one scratch serves all of its batches.
    const scratch = new BatchScratch();
    const gate = new CompressionGate();
    const live = (): boolean => ws.readyState === WebSocket.OPEN && this.cursor === cursor;
    while (live()) {
      // Reading only once a whole batch fits keeps batches full while the link is the bottleneck.
      await this.room(this.readBytes, live);
      const records = await cursor.next(this.readBytes);
      for (let i = 0; i < records.length && live(); i += this.limits.batchRecords) {
        const part =
          records.length <= this.limits.batchRecords ? records : records.slice(i, i + this.limits.batchRecords);
        const tryCompress = gate.shouldTry();
        const { frame, raw, compressed } = await encodeBatch(
          part,
          { vm: this.o.vm, generation: this.o.generation, tryCompress, ...this.progressOf(part) },
          scratch,
        );
        if (tryCompress) gate.record(compressed);
        await this.room(frame.length, live);
        if (!live()) return;
        // After the window: tokens are taken only for a frame that goes out at once.
        if (this.bucket !== undefined && !(await this.bucket.take(frame.length))) return;
        if (!live()) return;
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

  /** Waits until `bytes` more fit under the in-flight cap; a batch larger than the cap goes alone. */
  private async room(bytes: number, live: () => boolean): Promise<void> {
    while (live() && this.inFlight > 0 && this.inFlight + bytes > this.limits.inFlightBytes) {
      this.windowFull = true;
      // Woken by an ack, or by the connection closing (see the 'close' handler).
      await new Promise<void>((resolve) => (this.windowOpen = resolve));
      this.windowOpen = undefined;
    }
    this.windowFull = false;
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
