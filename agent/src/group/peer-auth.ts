import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { GroupCode, PeerError } from './group-codes.js';

/**
 * The cryptography of a peer link (docs/multi-vm.md, "Peer authentication"): each side proves it
 * holds the group secret with an HMAC-SHA256 over both sides' fresh nonces, both VM names and the
 * group, under a role label so that neither proof can be reflected as the other. Both then derive one
 * key per direction from the same inputs, and every later frame carries a sequence number and an
 * HMAC under the sender's key: a frame replayed on the same link repeats a sequence number, and on
 * another link (other nonces, other keys) its MAC does not verify.
 */
const LABEL = 'sr-group-v1';
export const NONCE_BYTES = 32;
const MAC_BYTES = 32;
const SEQ_BYTES = 8;

/** What both ends of one link agree on before any proof. */
export interface LinkContext {
  readonly group: string;
  /** The member that dialled (its name sorts first). */
  readonly dialer: string;
  readonly acceptor: string;
  readonly dialerNonce: Buffer;
  readonly acceptorNonce: Buffer;
}

export function newNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

function mac(key: Buffer, ...parts: (string | Buffer)[]): Buffer {
  const h = createHmac('sha256', key);
  for (const p of parts) {
    // Length-prefixed, so that no two different lists of parts hash the same bytes.
    const b = typeof p === 'string' ? Buffer.from(p, 'utf8') : p;
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(b.length, 0);
    h.update(len).update(b);
  }
  return h.digest();
}

const transcript = (c: LinkContext): Buffer[] => [
  Buffer.from(c.group),
  Buffer.from(c.dialer),
  Buffer.from(c.acceptor),
  c.dialerNonce,
  c.acceptorNonce,
];

/** The proof one side (`role`) sends: it holds `secret` and saw both nonces of this link. */
export function proofOf(secret: Buffer, role: 'dialer' | 'acceptor', c: LinkContext): Buffer {
  return mac(secret, LABEL, `proof:${role}`, ...transcript(c));
}

/** Checks a peer's proof in constant time. */
export function proofMatches(secret: Buffer, role: 'dialer' | 'acceptor', c: LinkContext, proof: Buffer): boolean {
  const want = proofOf(secret, role, c);
  return proof.length === want.length && timingSafeEqual(proof, want);
}

/** The keys of one authenticated link, one per direction, as seen from `self`. */
export interface SessionKeys {
  readonly send: Buffer;
  readonly receive: Buffer;
}

export function sessionKeys(secret: Buffer, c: LinkContext, self: string): SessionKeys {
  const base = mac(secret, LABEL, 'session', ...transcript(c));
  const other = self === c.dialer ? c.acceptor : c.dialer;
  return { send: mac(base, 'from', self), receive: mac(base, 'from', other) };
}

/** An authenticated frame body: 8-byte sequence number, 32-byte MAC over both, then the message. */
export function seal(key: Buffer, seq: number, message: Buffer): Buffer {
  const head = Buffer.allocUnsafe(SEQ_BYTES);
  head.writeBigUInt64BE(BigInt(seq), 0);
  return Buffer.concat([head, mac(key, head, message), message]);
}

/**
 * Verifies a sealed body from the peer and returns its sequence number and message. Throws
 * SR_GROUP_AUTH when the MAC does not verify (forged, or sealed for another link) and SR_GROUP_REPLAY
 * when the sequence number is not above `lastSeq`.
 */
export function open(key: Buffer, body: Buffer, lastSeq: number): { seq: number; message: Buffer } {
  if (body.length < SEQ_BYTES + MAC_BYTES)
    throw new PeerError(GroupCode.PROTOCOL, `authenticated frame of ${body.length} bytes is too short`);
  const head = body.subarray(0, SEQ_BYTES);
  const got = body.subarray(SEQ_BYTES, SEQ_BYTES + MAC_BYTES);
  const message = body.subarray(SEQ_BYTES + MAC_BYTES);
  if (!timingSafeEqual(got, mac(key, head, message)))
    throw new PeerError(GroupCode.AUTH, 'a frame MAC did not verify (forged, or replayed from another connection)');
  const seq = Number(head.readBigUInt64BE(0));
  if (seq <= lastSeq)
    throw new PeerError(GroupCode.REPLAY, `frame sequence number ${seq} is not above the last one, ${lastSeq}`);
  return { seq, message };
}
