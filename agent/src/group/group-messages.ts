import { GroupMarkSchema, ID_PATTERN, ROUND_PATTERN, type GroupMark } from '@site-recovery/shared';
import { GroupCode, PeerError } from './group-codes.js';

/** Version of the peer protocol, in the hello; a peer speaking another is refused. */
export const PEER_PROTOCOL_VERSION = 1;

/** Handshake, in the clear (proofs are HMACs; nothing secret travels). */
export type HandshakeMessage =
  | { t: 'hello'; v: number; group: string; from: string; to: string; nonce: string }
  | { t: 'challenge'; from: string; nonce: string; proof: string }
  | { t: 'proof'; proof: string };

/** What a member knows of terms: the highest it has seen and the coordinator that used it, if known. */
export interface TermView {
  readonly term: number;
  readonly by?: string;
}

/** Messages of an authenticated link. */
export type PeerMessage =
  | ({ t: 'welcome' } & TermView)
  | ({ t: 'hb' } & TermView)
  | { t: 'prepare'; term: number; mark: GroupMark }
  | { t: 'ready'; round: string }
  | { t: 'refused'; round: string; code: string; reason: string; term: number }
  | { t: 'commit'; round: string }
  | { t: 'abort'; round: string; code: string; reason: string; failedBy?: string };

const protocol = (what: string): PeerError => new PeerError(GroupCode.PROTOCOL, what);

function parseJson(body: Buffer): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch {
    throw protocol('a frame is not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw protocol('a frame is not a JSON object');
  return v as Record<string, unknown>;
}

const str = (m: Record<string, unknown>, k: string, max = 256): string => {
  const v = m[k];
  if (typeof v !== 'string' || v.length > max) throw protocol(`"${k}" of a ${String(m['t'])} message is not a string`);
  return v;
};
const id = (m: Record<string, unknown>, k: string): string => {
  const v = str(m, k);
  if (!ID_PATTERN.test(v)) throw protocol(`"${k}" of a ${String(m['t'])} message is not a name`);
  return v;
};
const hex = (m: Record<string, unknown>, k: string, bytes: number): string => {
  const v = str(m, k);
  if (v.length !== bytes * 2 || !/^[0-9a-f]+$/.test(v)) throw protocol(`"${k}" is not ${bytes} bytes of hex`);
  return v;
};
const term = (m: Record<string, unknown>, k = 'term'): number => {
  const v = m[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw protocol(`"${k}" is not a term`);
  return v;
};
const round = (m: Record<string, unknown>): string => {
  const v = str(m, 'round');
  if (!ROUND_PATTERN.test(v)) throw protocol('"round" is not <term>.<seq>');
  return v;
};
const termView = (m: Record<string, unknown>): TermView =>
  m['by'] === undefined ? { term: term(m) } : { term: term(m), by: id(m, 'by') };

/** Parses the handshake message expected now; anything else is SR_GROUP_PROTOCOL. */
export function parseHandshake<T extends HandshakeMessage['t']>(
  body: Buffer,
  expected: T,
  nonceBytes: number,
): Extract<HandshakeMessage, { t: T }> {
  const m = parseJson(body);
  if (m['t'] !== expected) throw protocol(`expected a ${expected} message, got ${JSON.stringify(m['t'])}`);
  let out: HandshakeMessage;
  if (expected === 'hello') {
    const v = m['v'];
    if (v !== PEER_PROTOCOL_VERSION) throw protocol(`peer protocol version ${JSON.stringify(v)} is not supported`);
    out = {
      t: 'hello',
      v,
      group: str(m, 'group'),
      from: str(m, 'from'),
      to: str(m, 'to'),
      nonce: hex(m, 'nonce', nonceBytes),
    };
  } else if (expected === 'challenge') {
    out = { t: 'challenge', from: str(m, 'from'), nonce: hex(m, 'nonce', nonceBytes), proof: hex(m, 'proof', 32) };
  } else {
    out = { t: 'proof', proof: hex(m, 'proof', 32) };
  }
  return out as Extract<HandshakeMessage, { t: T }>;
}

/** Parses a message of an authenticated link. */
export function parsePeerMessage(body: Buffer): PeerMessage {
  const m = parseJson(body);
  switch (m['t']) {
    case 'welcome':
      return { t: 'welcome', ...termView(m) };
    case 'hb':
      return { t: 'hb', ...termView(m) };
    case 'prepare': {
      const mark = GroupMarkSchema.safeParse(m['mark']);
      if (!mark.success) throw protocol(`a PREPARE's mark is invalid: ${mark.error.issues[0]?.message ?? ''}`);
      return { t: 'prepare', term: term(m), mark: mark.data };
    }
    case 'ready':
      return { t: 'ready', round: round(m) };
    case 'refused':
      return { t: 'refused', round: round(m), code: str(m, 'code', 64), reason: str(m, 'reason', 1024), term: term(m) };
    case 'commit':
      return { t: 'commit', round: round(m) };
    case 'abort':
      return {
        t: 'abort',
        round: round(m),
        code: str(m, 'code', 64),
        reason: str(m, 'reason', 1024),
        ...(m['failedBy'] !== undefined ? { failedBy: id(m, 'failedBy') } : {}),
      };
    default:
      throw protocol(`unknown message type ${JSON.stringify(m['t'])}`);
  }
}

export function encodeMessage(m: HandshakeMessage | PeerMessage): Buffer {
  return Buffer.from(JSON.stringify(m), 'utf8');
}
