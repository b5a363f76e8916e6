import net from 'node:net';
import { open, proofOf, seal, sessionKeys, type LinkContext, type SessionKeys } from '../../src/group/peer-auth.js';
import { randomBytes } from 'node:crypto';

/**
 * A group peer spoken to byte by byte from a plain socket: frames are built here (4-byte length and
 * body), so a test can send anything, replay captured bytes, or authenticate and then stay mute.
 */
export class RawPeer {
  private buffered = Buffer.alloc(0);
  private readonly frames: Buffer[] = [];
  private waiter: (() => void) | undefined;
  private ended = false;
  readonly closed: Promise<void>;
  /** Every frame this peer sent, as the bytes that went on the wire. */
  readonly sent: Buffer[] = [];
  keys: SessionKeys | undefined;
  private sendSeq = 0;
  private receiveSeq = 0;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, d]);
      while (this.buffered.length >= 4 && this.buffered.length >= 4 + this.buffered.readUInt32BE(0)) {
        const n = this.buffered.readUInt32BE(0);
        this.frames.push(this.buffered.subarray(4, 4 + n));
        this.buffered = this.buffered.subarray(4 + n);
      }
      this.waiter?.();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.ended = true;
        this.waiter?.();
        resolve();
      }),
    );
  }

  static connect(port: number): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => resolve(new RawPeer(s)));
      s.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.ended;
  }

  /** Writes bytes as they are. */
  write(bytes: Buffer): void {
    this.sent.push(bytes);
    this.socket.write(bytes);
  }

  /** Writes one frame: its body's length, big-endian, then the body. */
  frame(body: Buffer | object): Buffer {
    const b = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const f = Buffer.alloc(4 + b.length);
    f.writeUInt32BE(b.length, 0);
    b.copy(f, 4);
    this.write(f);
    return f;
  }

  /** The next frame body; undefined once the other side has closed and nothing is left. */
  async next(timeoutMs = 5000): Promise<Buffer | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0 && !this.ended) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame from the member within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    return this.frames.shift();
  }

  async nextJson(timeoutMs?: number): Promise<Record<string, unknown>> {
    const f = await this.next(timeoutMs);
    if (f === undefined) throw new Error('the member closed the connection');
    return JSON.parse(f.toString()) as Record<string, unknown>;
  }

  /** The next authenticated message, its MAC and sequence checked. */
  async nextSealed(timeoutMs?: number): Promise<Record<string, unknown>> {
    const f = await this.next(timeoutMs);
    if (f === undefined) throw new Error('the member closed the connection');
    const { seq, message } = open(this.keys!.receive, f, this.receiveSeq);
    this.receiveSeq = seq;
    return JSON.parse(message.toString()) as Record<string, unknown>;
  }

  /** Waits for the next authenticated message of type `t`, skipping heartbeats. */
  async nextOf(t: string, timeoutMs = 5000): Promise<Record<string, unknown>> {
    for (;;) {
      const m = await this.nextSealed(timeoutMs);
      if (m['t'] === t) return m;
    }
  }

  /** Sends an authenticated message under the next sequence number; returns the frame's bytes. */
  sendSealed(m: object): Buffer {
    return this.frame(seal(this.keys!.send, ++this.sendSeq, Buffer.from(JSON.stringify(m))));
  }

  /**
   * Dials as member `from` of `group` towards `to`: hello, the member's challenge, this side's proof
   * under `secret` (sent whether or not the member's proof checks out, to see what the member does
   * with a wrong one). Resolves once the member's welcome arrived, or when it closed.
   */
  async handshake(o: { group: string; from: string; to: string; secret: Buffer }): Promise<'up' | 'closed'> {
    const nonce = randomBytes(32);
    this.frame({ t: 'hello', v: 1, group: o.group, from: o.from, to: o.to, nonce: nonce.toString('hex') });
    const c = await this.next();
    if (c === undefined) return 'closed';
    const challenge = JSON.parse(c.toString()) as { nonce: string };
    const ctx: LinkContext = {
      group: o.group,
      dialer: o.from,
      acceptor: o.to,
      dialerNonce: nonce,
      acceptorNonce: Buffer.from(challenge.nonce, 'hex'),
    };
    this.frame({ t: 'proof', proof: proofOf(o.secret, 'dialer', ctx).toString('hex') });
    this.keys = sessionKeys(o.secret, ctx, o.from);
    try {
      const w = await this.nextSealed();
      return w['t'] === 'welcome' ? 'up' : 'closed';
    } catch (err) {
      if (this.ended) return 'closed';
      throw err;
    }
  }

  /**
   * Answers a member that dials this one (as member `self`), then returns: the caller decides whether
   * to speak or stay mute.
   */
  async accept(o: { group: string; self: string; secret: Buffer }): Promise<string> {
    const hello = await this.nextJson();
    const nonce = randomBytes(32);
    const ctx: LinkContext = {
      group: o.group,
      dialer: String(hello['from']),
      acceptor: o.self,
      dialerNonce: Buffer.from(String(hello['nonce']), 'hex'),
      acceptorNonce: nonce,
    };
    this.frame({
      t: 'challenge',
      from: o.self,
      nonce: nonce.toString('hex'),
      proof: proofOf(o.secret, 'acceptor', ctx).toString('hex'),
    });
    await this.nextJson(); // the dialer's proof: this side only pretends to be a member
    this.keys = sessionKeys(o.secret, ctx, o.self);
    this.sendSealed({ t: 'welcome', term: 0 });
    return ctx.dialer;
  }
}
