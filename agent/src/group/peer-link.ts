import type net from 'node:net';
import type { PeerLimits } from './group-config.js';
import { GroupCode, PeerError } from './group-codes.js';
import {
  PEER_PROTOCOL_VERSION,
  encodeMessage,
  parseHandshake,
  parsePeerMessage,
  type HandshakeMessage,
  type PeerMessage,
  type TermView,
} from './group-messages.js';
import {
  NONCE_BYTES,
  newNonce,
  open,
  proofMatches,
  proofOf,
  seal,
  sessionKeys,
  type LinkContext,
  type SessionKeys,
} from './peer-auth.js';
import { FrameReader, encodeFrame } from './peer-frame.js';

export interface PeerLinkOptions {
  readonly socket: net.Socket;
  readonly role: 'dialer' | 'acceptor';
  readonly self: string;
  readonly group: string;
  readonly secret: Buffer;
  /** Every member's VM name, this one included. */
  readonly members: ReadonlySet<string>;
  /** The VM a dialer dialled. */
  readonly expect?: string;
  readonly limits: PeerLimits;
  /** What this member knows of terms, for the welcome and every heartbeat. */
  readonly terms: () => TermView;
  readonly onUp: (link: PeerLink) => void;
  readonly onMessage: (link: PeerLink, m: PeerMessage) => void;
  /** Once, when the link closes; `refused` when the peer failed authentication or broke the protocol. */
  readonly onClose: (link: PeerLink, why: { readonly refused?: PeerError; readonly message: string }) => void;
}

type State = 'hello' | 'challenge' | 'proof' | 'welcome' | 'up' | 'closed';

/**
 * One connection between two members: the challenge-response both ways, then authenticated frames
 * (sequence number and MAC, see peer-auth.ts) and heartbeats. Until the handshake completes nothing
 * but its next message is accepted, and frames are limited to `preAuthFrameBytes`.
 */
export class PeerLink {
  /** The peer's VM: known to a dialer from the start, to an acceptor from the hello. */
  peer: string | undefined;
  /** The peer's address, for logs. */
  remote: string | undefined;
  private state: State;
  private readonly reader: FrameReader;
  private ownNonce = newNonce();
  private ctx: LinkContext | undefined;
  private keys: SessionKeys | undefined;
  private sendSeq = 0;
  private receiveSeq = 0;
  private lastHeard = performance.now();
  private handshakeTimer: NodeJS.Timeout | undefined;
  private heartbeat: NodeJS.Timeout | undefined;

  constructor(private readonly o: PeerLinkOptions) {
    this.peer = o.expect;
    this.reader = new FrameReader(o.limits.preAuthFrameBytes);
    this.state = o.role === 'dialer' ? 'challenge' : 'hello';
    const s = o.socket;
    s.setNoDelay(true);
    const note = (): void => void (this.remote = `${s.remoteAddress}:${s.remotePort}`);
    if (s.connecting) s.once('connect', note);
    else note();
    s.on('data', (data: Buffer) => this.onData(data));
    s.on('error', () => undefined); // 'close' follows and says the link is gone
    s.on('close', () => this.close('the connection closed'));
    // Not a refusal: a peer that is paused or unreachable is down, not hostile.
    this.handshakeTimer = setTimeout(
      () => this.shutDown(undefined, `no handshake within ${o.limits.handshakeTimeoutMs} ms`),
      o.limits.handshakeTimeoutMs,
    );
    this.handshakeTimer.unref();
    if (o.role === 'dialer') {
      const hello = {
        t: 'hello' as const,
        v: PEER_PROTOCOL_VERSION,
        group: o.group,
        from: o.self,
        to: o.expect!,
        nonce: this.ownNonce.toString('hex'),
      };
      if (s.connecting) s.once('connect', () => this.write(encodeMessage(hello)));
      else this.write(encodeMessage(hello));
    }
  }

  get up(): boolean {
    return this.state === 'up';
  }

  /** Sends a message on an authenticated link; false when the link is not up (or just closed). */
  send(m: PeerMessage): boolean {
    if (this.state !== 'up' && !(this.state === 'proof' && m.t === 'welcome')) return false;
    return this.write(seal(this.keys!.send, ++this.sendSeq, encodeMessage(m)));
  }

  close(message = 'closed by this member'): void {
    this.shutDown(undefined, message);
  }

  private write(body: Buffer): boolean {
    const s = this.o.socket;
    if (s.destroyed) return false;
    if (s.writableLength > this.o.limits.queuedBytes) {
      this.shutDown(undefined, `the peer has not read ${s.writableLength} bytes sent to it`);
      return false;
    }
    s.write(encodeFrame(body));
    return true;
  }

  private onData(data: Buffer): void {
    if (this.state === 'closed') return;
    this.lastHeard = performance.now();
    try {
      for (const body of this.reader.push(data)) {
        this.onFrame(body);
        if ((this.state as State) === 'closed') return; // onFrame may have closed the link
      }
    } catch (err) {
      if (err instanceof PeerError) this.fail(err);
      else this.shutDown(undefined, (err as Error).message);
    }
  }

  private onFrame(body: Buffer): void {
    const o = this.o;
    switch (this.state) {
      case 'hello': {
        const m = parseHandshake(body, 'hello', NONCE_BYTES);
        if (m.group !== o.group)
          throw new PeerError(
            GroupCode.WRONG_GROUP,
            `a peer of group "${m.group}" dialled this member of "${o.group}"`,
          );
        if (m.from === o.self || !o.members.has(m.from))
          throw new PeerError(
            GroupCode.UNKNOWN_PEER,
            `a peer introduced itself as "${m.from}", not a member in --peers`,
          );
        this.peer = m.from;
        if (m.to !== o.self)
          throw new PeerError(
            GroupCode.PROTOCOL,
            `${m.from} dialled "${m.to}" but reached ${o.self}: check its --peers`,
          );
        if (m.from > o.self)
          throw new PeerError(
            GroupCode.PROTOCOL,
            `${m.from} dialled ${o.self}, but the member whose name sorts first dials`,
          );
        this.ctx = {
          group: o.group,
          dialer: m.from,
          acceptor: o.self,
          dialerNonce: Buffer.from(m.nonce, 'hex'),
          acceptorNonce: this.ownNonce,
        };
        const challenge: HandshakeMessage = {
          t: 'challenge',
          from: o.self,
          nonce: this.ownNonce.toString('hex'),
          proof: proofOf(o.secret, 'acceptor', this.ctx).toString('hex'),
        };
        this.state = 'proof';
        this.write(encodeMessage(challenge));
        return;
      }
      case 'challenge': {
        const m = parseHandshake(body, 'challenge', NONCE_BYTES);
        if (m.from !== o.expect)
          throw new PeerError(GroupCode.UNKNOWN_PEER, `dialled ${o.expect} but "${m.from}" answered: check --peers`);
        this.ctx = {
          group: o.group,
          dialer: o.self,
          acceptor: m.from,
          dialerNonce: this.ownNonce,
          acceptorNonce: Buffer.from(m.nonce, 'hex'),
        };
        if (!proofMatches(o.secret, 'acceptor', this.ctx, Buffer.from(m.proof, 'hex')))
          throw new PeerError(GroupCode.AUTH, `${m.from} does not prove the group secret: check --group-secret-file`);
        this.write(encodeMessage({ t: 'proof', proof: proofOf(o.secret, 'dialer', this.ctx).toString('hex') }));
        this.keys = sessionKeys(o.secret, this.ctx, o.self);
        this.reader.maxBytes = o.limits.frameBytes;
        this.state = 'welcome';
        return;
      }
      case 'proof': {
        const m = parseHandshake(body, 'proof', NONCE_BYTES);
        if (!proofMatches(o.secret, 'dialer', this.ctx!, Buffer.from(m.proof, 'hex')))
          throw new PeerError(
            GroupCode.AUTH,
            `${this.peer} does not prove the group secret: check --group-secret-file`,
          );
        this.keys = sessionKeys(o.secret, this.ctx!, o.self);
        this.reader.maxBytes = o.limits.frameBytes;
        this.send({ t: 'welcome', ...o.terms() });
        this.goUp();
        return;
      }
      case 'welcome': {
        const m = this.openMessage(body);
        if (m.t !== 'welcome') throw new PeerError(GroupCode.PROTOCOL, `expected a welcome, got a ${m.t}`);
        this.goUp();
        o.onMessage(this, m);
        return;
      }
      case 'up':
        o.onMessage(this, this.openMessage(body));
        return;
      case 'closed':
        return;
    }
  }

  private openMessage(body: Buffer): PeerMessage {
    const { seq, message } = open(this.keys!.receive, body, this.receiveSeq);
    this.receiveSeq = seq;
    return parsePeerMessage(message);
  }

  private goUp(): void {
    clearTimeout(this.handshakeTimer);
    this.state = 'up';
    const { heartbeatMs, peerTimeoutMs } = this.o.limits;
    this.heartbeat = setInterval(() => {
      if (performance.now() - this.lastHeard > peerTimeoutMs) {
        this.shutDown(undefined, `no frame from ${this.peer} for ${peerTimeoutMs} ms`);
        return;
      }
      this.send({ t: 'hb', ...this.o.terms() });
    }, heartbeatMs);
    this.heartbeat.unref();
    this.o.onUp(this);
  }

  private fail(err: PeerError): void {
    this.shutDown(err, err.message);
  }

  private shutDown(refused: PeerError | undefined, message: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearTimeout(this.handshakeTimer);
    clearInterval(this.heartbeat);
    this.o.socket.destroy();
    this.o.onClose(this, { ...(refused !== undefined ? { refused } : {}), message });
  }
}
