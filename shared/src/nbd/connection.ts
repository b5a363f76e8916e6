import type { Socket } from 'node:net';
import type { Logger } from '../index.js';
import { errnoOf } from './block-backend.js';
import { ByteQueue } from './byte-queue.js';
import { Cmd, CmdFlag, Errno, REQUEST_HEADER_BYTES, SIMPLE_REPLY_MAGIC } from './constants.js';
import type { ExportRegistry, NbdExport } from './export-registry.js';
import { Handshake, minimumBlock } from './handshake.js';
import type { NbdServerLimits } from './limits.js';
import type { Payload, PayloadPool } from './payload-pool.js';
import { parseRequest, validateRequest, type ExportShape, type NbdRequest } from './request.js';

/** Socket bytes queued for sending beyond which we stop reading new requests. */
const MAX_UNSENT_REPLY_BYTES = 64 * 1024 * 1024;
/** How long a peer we hung up on may keep its side open. */
const HANG_UP_GRACE_MS = 2000;

/**
 * One client connection: handshake, then transmission. Requests execute concurrently and are
 * answered as they finish (the protocol allows any order); write ordering is the backend's job.
 */
export class NbdConnection {
  private readonly queue = new ByteQueue();
  private phase: 'handshake' | 'transmission' | 'closing' | 'closed' = 'handshake';
  private readonly handshake: Handshake;
  private exp: NbdExport | undefined;
  private shape: ExportShape | undefined;
  /** Header of a WRITE whose payload has not fully arrived. */
  private pendingWrite: NbdRequest | undefined;
  /** Payload bytes of a rejected WRITE still to be read and dropped. */
  private discardLeft = 0;
  private inFlight = 0;
  private inFlightBytes = 0;
  private paused = false;
  private readonly handshakeTimer: NodeJS.Timeout;
  readonly closed: Promise<void>;

  constructor(
    private readonly socket: Socket,
    registry: ExportRegistry,
    private readonly limits: NbdServerLimits,
    private readonly log: Logger,
    private readonly pool: PayloadPool,
  ) {
    socket.setNoDelay(true);
    this.handshake = new Handshake(registry, limits, (b) => this.send(b));
    this.handshakeTimer = setTimeout(() => this.abort('handshake timed out'), limits.handshakeTimeoutMs);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      // After a refused handshake or DISC nothing more is read: a client that keeps sending must
      // not grow our memory.
      if (this.phase !== 'handshake' && this.phase !== 'transmission') return;
      this.queue.push(chunk);
      this.pump();
    });
    socket.on('error', (err) => this.log.debug({ err: err.message }, 'nbd socket error'));
    socket.on('close', () => {
      clearTimeout(this.handshakeTimer);
      this.phase = 'closed';
      this.queue.clear();
    });
    socket.on('drain', () => this.resumeIfRoom());
    this.send(Handshake.greeting());
  }

  /** Closes the connection without waiting for anything. */
  abort(reason: string): void {
    if (this.phase === 'closed') return;
    this.log.debug({ reason }, 'closing nbd connection');
    this.phase = 'closed';
    this.socket.destroy();
  }

  private send(buf: Buffer): void {
    if (this.phase !== 'closed' && !this.socket.destroyed) this.socket.write(buf);
  }

  private pump(): void {
    if (this.phase === 'handshake') {
      const r = this.handshake.feed(this.queue);
      if (r.state === 'more') return;
      if (r.state === 'close') {
        // A malformed or aborted handshake ends the connection; nothing was written to storage.
        clearTimeout(this.handshakeTimer);
        this.log.debug({ reason: r.reason }, 'handshake ended');
        this.hangUp();
        return;
      }
      clearTimeout(this.handshakeTimer);
      this.phase = 'transmission';
      this.exp = r.export;
      this.shape = {
        size: r.export.backend.size,
        readOnly: r.export.readOnly,
        alignment: r.blockSizeNegotiated ? minimumBlock(r.export.backend.size) : 1,
        maxPayloadBytes: this.limits.maxPayloadBytes,
      };
    }
    while (this.phase === 'transmission' && !this.paused) {
      if (this.discardLeft > 0) {
        this.discardLeft -= this.queue.skip(this.discardLeft);
        if (this.discardLeft > 0) return;
      }
      if (this.pendingWrite !== undefined) {
        const w = this.pendingWrite;
        if (this.queue.length < w.length) return;
        this.pendingWrite = undefined;
        this.execute(w, this.takePayload(w.length));
        continue;
      }
      if (this.queue.length < REQUEST_HEADER_BYTES) return;
      const req = parseRequest(this.queue.take(REQUEST_HEADER_BYTES));
      if (req === undefined) return this.abort('bad request magic');
      const errno = validateRequest(req, this.shape!);
      if (req.type === Cmd.WRITE) {
        if (errno !== Errno.OK) {
          this.discardLeft = req.length; // keep the stream in sync; the connection stays usable
          this.reply(req.cookie, errno);
        } else {
          this.pendingWrite = req;
        }
        continue;
      }
      if (errno !== Errno.OK) {
        this.reply(req.cookie, errno);
        continue;
      }
      if (req.type === Cmd.DISC) {
        this.phase = 'closing';
        this.finishIfIdle();
        return;
      }
      this.execute(req, undefined);
    }
  }

  /** A payload inside one socket chunk is used in place; one spanning chunks is copied into the pool. */
  private takePayload(n: number): Payload {
    if (this.queue.isContiguous(n)) return { buf: this.queue.take(n), release: () => undefined };
    const p = this.pool.alloc(n);
    this.queue.takeInto(p.buf);
    return p;
  }

  private execute(req: NbdRequest, payload: Payload | undefined): void {
    // A READ pins a reply buffer of its length until sent, so it counts like a WRITE's payload.
    const bytes = req.type === Cmd.READ ? req.length : (payload?.buf.length ?? 0);
    this.inFlight++;
    this.inFlightBytes += bytes;
    if (
      this.inFlight >= this.limits.maxInFlightRequests ||
      this.inFlightBytes >= this.limits.maxInFlightBytes ||
      this.socket.writableLength > MAX_UNSENT_REPLY_BYTES
    ) {
      this.pause();
    }
    this.run(req, payload?.buf).then(
      (data) => {
        payload?.release(); // the backend is done with it (BlockBackend contract)
        this.done(req, bytes, Errno.OK, data);
      },
      (err: unknown) => {
        payload?.release();
        this.log.warn(
          { err: (err as Error).message, type: req.type, offset: req.offset, length: req.length },
          'nbd request failed',
        );
        this.done(req, bytes, errnoOf(err), undefined);
      },
    );
  }

  private async run(req: NbdRequest, payload: Buffer | undefined): Promise<Buffer | undefined> {
    const backend = this.exp!.backend;
    const fua = (req.flags & CmdFlag.FUA) !== 0;
    switch (req.type) {
      case Cmd.READ:
        return req.length === 0 ? Buffer.alloc(0) : backend.read(req.offset, req.length);
      case Cmd.WRITE:
        if (req.length > 0) await backend.write(req.offset, payload!, fua);
        return undefined;
      case Cmd.WRITE_ZEROES:
        if (req.length > 0) await backend.zero(req.offset, req.length, fua, (req.flags & CmdFlag.NO_HOLE) === 0);
        return undefined;
      case Cmd.TRIM:
        if (req.length > 0) await backend.trim(req.offset, req.length, fua);
        return undefined;
      case Cmd.FLUSH:
        await backend.flush();
        return undefined;
      case Cmd.CACHE:
        return undefined; // a prefetch hint; the page cache already does this for image files
      default:
        throw new Error(`unreachable command ${req.type}`);
    }
  }

  private done(req: NbdRequest, bytes: number, errno: Errno, data: Buffer | undefined): void {
    this.inFlight--;
    this.inFlightBytes -= bytes;
    this.reply(req.cookie, errno, data);
    this.resumeIfRoom();
    this.finishIfIdle();
  }

  /**
   * Replies finished in the same turn of the event loop go out in one system call: at queue depth
   * 32 a write syscall per 16-byte reply costs more CPU than the request itself.
   */
  private reply(cookie: Buffer, errno: Errno, data?: Buffer): void {
    if (this.phase === 'closed') return;
    const h = Buffer.allocUnsafe(16);
    h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(errno, 4);
    cookie.copy(h, 8);
    if (this.replies.length === 0) setImmediate(this.flushReplies);
    this.replies.push(h);
    if (data !== undefined && data.length > 0) this.replies.push(data);
  }

  private replies: Buffer[] = [];

  private readonly flushReplies = (): void => {
    const out = this.replies;
    this.replies = [];
    if (this.phase === 'closed' || this.socket.destroyed || out.length === 0) return;
    if (out.length === 1) {
      this.socket.write(out[0]!);
      return;
    }
    this.socket.cork();
    for (const b of out) this.socket.write(b);
    this.socket.uncork();
  };

  private pause(): void {
    if (!this.paused) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private resumeIfRoom(): void {
    if (!this.paused || this.phase === 'closed') return;
    if (this.inFlight >= this.limits.maxInFlightRequests || this.inFlightBytes >= this.limits.maxInFlightBytes) return;
    if (this.socket.writableLength > MAX_UNSENT_REPLY_BYTES) return;
    this.paused = false;
    this.socket.resume();
    this.pump();
  }

  private finishIfIdle(): void {
    if (this.phase === 'closing' && this.inFlight === 0) {
      this.flushReplies();
      this.hangUp();
    }
  }

  /** Sends what is queued, then closes; a peer that does not close its side is cut off soon after. */
  private hangUp(): void {
    this.phase = 'closed';
    this.queue.clear();
    this.socket.pause(); // stop reading: a peer that keeps sending meets TCP backpressure
    this.socket.end();
    setTimeout(() => this.socket.destroy(), HANG_UP_GRACE_MS).unref();
  }
}
