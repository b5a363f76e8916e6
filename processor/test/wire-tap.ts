import type { AddressInfo } from 'node:net';
import { MessageSchema, decodeMessage, encodeMessage } from '@site-recovery/shared';
import { WebSocket, WebSocketServer } from 'ws';
import { Condition } from './condition.js';

/**
 * A relay between the processor and the real cache-store. What the processor receives comes from
 * the cache-store unchanged; the tap only records both directions (so a test sees every `applied`
 * and `error` the processor sent), holds the cache-store's messages back like a stalled link, or
 * drops the link. It is the one place a test may forge traffic — `inject` — and only for faults
 * the real cache-store can never produce (a frame that is not msgpack, a batch it would refuse to
 * store, a message out of turn, an error it has no reason to send).
 */

/** One message as decoded against the protocol schemas (`t: 'invalid'` if it failed them); batches without payload. */
export type Sent = Record<string, unknown> & { t: string };

const MAX_FRAME_BYTES = 64 << 20;

function summary(frame: Buffer): Sent {
  try {
    const m = decodeMessage(frame, MessageSchema) as Sent;
    if (m.t !== 'batch') return m;
    const { vm, generation, first, count, progress } = m;
    return { t: 'batch', vm, generation, first, count, last: (first as number) + (count as number) - 1, progress };
  } catch (err) {
    return { t: 'invalid', error: (err as Error).message };
  }
}

/** ws refuses to send the reserved close codes (1005, 1006, ...): they say "no code" or "no close frame". */
function sendableCode(code: number): number {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999)
    ? code
    : 1000;
}

/** One connection of the processor, relayed to a connection of its own to the cache-store. */
export class TapSession {
  /** Everything the processor sent, in order. */
  readonly fromProcessor: Sent[] = [];
  /** Everything the processor was sent (relayed or injected), in order, as it went out. */
  readonly toProcessor: Sent[] = [];
  /** How the processor's connection ended. */
  readonly closed: Promise<{ code: number; reason: string }>;
  private held: { frame: Buffer; m: Sent }[] | undefined;

  constructor(
    private readonly down: WebSocket,
    private readonly up: WebSocket,
    private readonly tap: WireTap,
  ) {
    const early: Buffer[] = [];
    up.once('open', () => {
      for (const f of early.splice(0)) up.send(f);
    });
    down.on('message', (data: Buffer) => {
      const m = summary(data);
      this.fromProcessor.push(m);
      tap.heard(m, this);
      if (tap.keep?.(m) === true) return;
      if (up.readyState === WebSocket.OPEN) up.send(data);
      else if (up.readyState === WebSocket.CONNECTING) early.push(data);
    });
    up.on('message', (frame: Buffer) => {
      const m = summary(frame);
      if (this.held === undefined && tap.hold?.(m, this) === true) this.held = [];
      // Once something is held, everything after it waits too, so the order stays the cache-store's.
      if (this.held !== undefined) this.held.push({ frame, m });
      else this.forward(frame, m);
    });
    up.on('error', () => undefined);
    down.on('error', () => undefined);
    up.on('close', (code, reason) => {
      if (down.readyState === WebSocket.OPEN) down.close(sendableCode(code), reason);
    });
    this.closed = new Promise((resolve) =>
      down.once('close', (code, reason) => {
        if (up.readyState === WebSocket.CONNECTING) up.terminate();
        else if (up.readyState === WebSocket.OPEN) up.close(sendableCode(code), reason);
        resolve({ code, reason: reason.toString() });
        tap.changed();
      }),
    );
  }

  /** The first message from the processor (received or to come) that matches. */
  waitFor(what: string, match: (m: Sent) => boolean, timeoutMs = 10_000): Promise<Sent> {
    return this.tap.until(
      what,
      () => this.fromProcessor.find(match),
      timeoutMs,
      () => this.describe(),
    );
  }

  /** The first message sent to the processor (relayed or injected) that matches. */
  waitForSent(what: string, match: (m: Sent) => boolean, timeoutMs = 10_000): Promise<Sent> {
    return this.tap.until(
      what,
      () => this.toProcessor.find(match),
      timeoutMs,
      () => this.describe(),
    );
  }

  /** The processor's subscription to `vm` on this connection. */
  subscribeOf(vm: string): Promise<Sent> {
    return this.waitFor(`a subscription to ${vm}`, (m) => m.t === 'subscribe' && m['vm'] === vm);
  }

  /** The error the processor reported before it closed this connection. */
  errorSent(): Promise<Sent> {
    return this.waitFor('an error message from the processor', (m) => m.t === 'error');
  }

  /** Sends the processor a message or raw frame the cache-store did not send. */
  inject(message: object | Buffer): Promise<void> {
    const frame = Buffer.isBuffer(message) ? message : encodeMessage(message);
    return new Promise((resolve, reject) =>
      this.down.send(frame, { binary: true }, (err) => {
        if (err) return reject(err);
        this.toProcessor.push({ ...summary(frame), injected: true });
        this.tap.changed();
        resolve();
      }),
    );
  }

  /** Closes the processor's connection with `code`, as a cache-store closing after an error would. */
  injectClose(code: number, reason: string): void {
    this.down.close(code, reason);
  }

  /** Cuts both connections without a close handshake, as a failed network would. */
  drop(): void {
    this.down.terminate();
    this.up.terminate();
  }

  /** Lets held frames through, in order. */
  release(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const h of held) this.forward(h.frame, h.m);
  }

  private forward(frame: Buffer, m: Sent): void {
    if (this.down.readyState !== WebSocket.OPEN) return;
    this.down.send(frame);
    this.toProcessor.push(m);
    this.tap.changed();
  }

  private describe(): string {
    const types = (l: Sent[]): string => l.map((m) => m.t).join(',');
    return `processor sent [${types(this.fromProcessor)}], was sent [${types(this.toProcessor)}]`;
  }
}

export class WireTap {
  readonly sessions: TapSession[] = [];
  /**
   * While set, the first cache-store message of a connection it matches waits in the tap, and
   * everything after it too, as on a stalled link, until `release`.
   */
  hold: ((m: Sent, s: TapSession) => boolean) | undefined;
  /**
   * While set, processor messages it matches are recorded and not relayed: the sums answers of a
   * test that asked for them itself (with `inject`), which the cache-store would relay to an agent.
   */
  keep: ((m: Sent) => boolean) | undefined;
  /** Called on the tap's event loop turn as each processor message arrives (before it is relayed). */
  onFromProcessor: ((m: Sent, s: TapSession) => void) | undefined;
  private readonly cond = new Condition();

  private constructor(
    private readonly wss: WebSocketServer,
    private readonly upstream: string,
  ) {
    wss.on('connection', (down) => {
      const up = new WebSocket(this.upstream, { perMessageDeflate: false, maxPayload: MAX_FRAME_BYTES });
      this.sessions.push(new TapSession(down, up, this));
      this.cond.changed();
    });
  }

  /** A tap on a free loopback port relaying to `upstream` (the cache-store's `ws://` address). */
  static async start(upstream: string): Promise<WireTap> {
    const wss = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      perMessageDeflate: false,
      maxPayload: MAX_FRAME_BYTES,
    });
    await new Promise<void>((resolve) => wss.once('listening', resolve));
    return new WireTap(wss, upstream);
  }

  /** Where the processor connects. */
  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}/`;
  }

  /** The `index`-th connection of the processor (0-based), waiting for it if needed. */
  session(index: number, timeoutMs = 10_000): Promise<TapSession> {
    return this.until(
      `processor connection #${index}`,
      () => this.sessions[index],
      timeoutMs,
      () => `have ${this.sessions.length}`,
    );
  }

  /** Every `applied` the processor sent, over all its connections, in order. */
  applied(vm?: string): Sent[] {
    return this.sessions.flatMap((s) =>
      s.fromProcessor.filter((m) => m.t === 'applied' && (vm === undefined || m['vm'] === vm)),
    );
  }

  /** The highest LSN of `vm` the processor has confirmed (0: none). */
  confirmed(vm: string, generation?: string): number {
    return Math.max(
      0,
      ...this.applied(vm)
        .filter((m) => generation === undefined || m['generation'] === generation)
        .map((m) => m['lsn'] as number),
    );
  }

  /** Waits until the processor has confirmed `lsn` (or more) of `vm` (of `generation`, if given). */
  confirmedAtLeast(vm: string, lsn: number, generation?: string, timeoutMs = 20_000): Promise<number> {
    return this.until(
      `the processor to confirm ${vm}${generation ? ` generation ${generation}` : ''} through LSN ${lsn}`,
      () => {
        const c = this.confirmed(vm, generation);
        return c >= lsn ? c : undefined;
      },
      timeoutMs,
      () => `confirmed through ${this.confirmed(vm, generation)}`,
    );
  }

  /** Stops holding and lets every held frame through. */
  release(): void {
    this.hold = undefined;
    for (const s of this.sessions) s.release();
  }

  /** Cuts every open link (the processor reconnects with its backoff). */
  dropAll(): void {
    for (const s of this.sessions) s.drop();
  }

  close(): Promise<void> {
    this.dropAll();
    return new Promise((resolve) => this.wss.close(() => resolve()));
  }

  /** @internal */
  heard(m: Sent, s: TapSession): void {
    this.onFromProcessor?.(m, s);
    this.cond.changed();
  }

  /** @internal */
  changed(): void {
    this.cond.changed();
  }

  /** @internal */
  until<T>(what: string, probe: () => T | undefined, timeoutMs: number, detail: () => string): Promise<T> {
    return this.cond.until(what, probe, timeoutMs, detail);
  }
}
