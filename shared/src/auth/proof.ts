import { randomBytes } from 'node:crypto';
import { ErrorCode } from '../errors.js';
import type { Logger } from '../logger.js';
import { RevocationList } from './revocation-list.js';
import {
  macOf,
  parseClaims,
  sameBytes,
  type ParsedToken,
  type TokenClaims,
  type TokenFailure,
  type TokenRole,
} from './token.js';

/**
 * Proof of a token, one per request (an HTTP request or a WebSocket upgrade), in the
 * {@link AUTH_HEADER} header: `srt1.<claims>.<time>.<nonce>.<proof>`, where proof =
 * HMAC-SHA256(token MAC, `<claims>|<time>|<nonce>|<METHOD> <path>|<host>`). The token's MAC stays with
 * its holder; the checker derives it from its secret. A captured header is refused when replayed (its
 * nonce was seen within the window), when sent to another path or host, or once its time is stale,
 * so without TLS an eavesdropper learns the claims but gains no credential.
 */
export const AUTH_HEADER = 'x-sr-auth';

export interface RequestTarget {
  readonly method: string;
  /** Path and query as sent in the request line. */
  readonly path: string;
  /** The Host header as sent. */
  readonly host: string;
}

function proofText(signedClaims: string, time: number, nonce: string, t: RequestTarget): string {
  return `${signedClaims}|${time}|${nonce}|${t.method.toUpperCase()} ${t.path}|${t.host.toLowerCase()}`;
}

/** The header value that proves `token` for one request. */
export function proveToken(token: ParsedToken, target: RequestTarget, nowMs = Date.now()): string {
  const time = Math.floor(nowMs / 1000);
  const nonce = randomBytes(16).toString('base64url');
  const proof = macOf(token.mac, proofText(token.signed, time, nonce, target)).toString('base64url');
  return `${token.signed}.${time}.${nonce}.${proof}`;
}

export interface TokenVerifierOptions {
  readonly secret: Buffer;
  readonly log: Logger;
  /** File of revoked token ids, reloaded when it changes. */
  readonly revokedTokensFile?: string;
  /** How far a proof's time may be from the checker's clock. Default {@link DEFAULT_CLOCK_SKEW_MS}. */
  readonly clockSkewMs?: number;
  /** Most nonces remembered at once; past it new proofs are refused (SR_LIMIT) until old ones age out. */
  readonly maxNonces?: number;
}

/** Two minutes either way: machines of one deployment keep time by NTP. */
export const DEFAULT_CLOCK_SKEW_MS = 120_000;
/** Enough for hundreds of requests a second within the window; each entry is ~60 bytes. */
export const DEFAULT_MAX_NONCES = 100_000;

export type AuthResult = { readonly ok: true; readonly claims: TokenClaims } | TokenFailure;

/** What a request needs: a role, and for agent tokens the VM it acts on. */
export interface Requirement {
  readonly roles: readonly TokenRole[];
}

/**
 * Checks proofs against one daemon's secret: MAC, expiry, revocation, time window, single use of each
 * nonce. Constant-time comparisons; nothing of a failed proof is logged but its claims' id.
 */
export class TokenVerifier {
  private readonly skewMs: number;
  private readonly maxNonces: number;
  private readonly revoked: RevocationList;
  /** nonce → when it may be forgotten (ms); insertion order is roughly expiry order. */
  private readonly seen = new Map<string, number>();

  constructor(private readonly o: TokenVerifierOptions) {
    this.skewMs = o.clockSkewMs ?? DEFAULT_CLOCK_SKEW_MS;
    this.maxNonces = o.maxNonces ?? DEFAULT_MAX_NONCES;
    this.revoked = new RevocationList(o.revokedTokensFile, o.log);
  }

  /** Checks the {@link AUTH_HEADER} value of one request. */
  check(header: string | undefined, target: RequestTarget, require: Requirement, nowMs = Date.now()): AuthResult {
    const fail = (code: ErrorCode, message: string): TokenFailure => ({ ok: false, code, message });
    if (header === undefined || header === '')
      return fail(ErrorCode.AUTH, `no credential: send the ${AUTH_HEADER} header`);
    const p = parseClaims(header);
    if (!p.ok) return p;
    const { claims } = p;
    if (p.rest.length !== 3) return fail(ErrorCode.AUTH, 'credential proof is malformed');
    const [timeText, nonce, proofText64] = p.rest as [string, string, string];
    const time = Number(timeText);
    if (!/^\d{1,12}$/.test(timeText) || !/^[A-Za-z0-9_-]{16,64}$/.test(nonce))
      return fail(ErrorCode.AUTH, 'credential proof is malformed');
    const expected = macOf(macOf(this.o.secret, p.signed), proofText(p.signed, time, nonce, target));
    // Compared as the canonical text: base64url decoding ignores stray characters and trailing bits, so
    // comparing decoded bytes would accept many spellings of one proof.
    if (!sameBytes(Buffer.from(proofText64), Buffer.from(expected.toString('base64url'))))
      return fail(ErrorCode.AUTH, `credential ${claims.id} is not valid here (wrong secret, host or path)`);
    const nowS = nowMs / 1000;
    if (claims.expiresAt <= nowS) return fail(ErrorCode.AUTH, `credential ${claims.id} has expired`);
    if (this.revoked.has(claims.id)) return fail(ErrorCode.AUTH, `credential ${claims.id} is revoked`);
    if (Math.abs(nowS - time) * 1000 > this.skewMs)
      return fail(ErrorCode.AUTH, `credential proof of ${claims.id} is stale: check this machine's clock`);
    if (!require.roles.includes(claims.role))
      return fail(ErrorCode.AUTH, `a ${claims.role} credential (${claims.id}) may not do this`);
    this.forgetOld(nowMs);
    if (this.seen.has(nonce)) return fail(ErrorCode.AUTH, `credential proof of ${claims.id} was replayed`);
    if (this.seen.size >= this.maxNonces)
      return fail(ErrorCode.LIMIT, 'too many authenticated requests within the replay window; retry shortly');
    this.seen.set(nonce, time * 1000 + this.skewMs);
    return { ok: true, claims };
  }

  /**
   * Whether a credential accepted earlier still holds: not expired, not revoked since. A long-lived
   * session (a WebSocket) is checked with this while it lasts, so that revoking a token or letting it
   * expire ends the sessions opened with it, not only the next ones.
   */
  stillValid(claims: TokenClaims, nowMs = Date.now()): AuthResult {
    if (claims.expiresAt <= nowMs / 1000)
      return { ok: false, code: ErrorCode.AUTH, message: `credential ${claims.id} has expired` };
    if (this.revoked.has(claims.id))
      return { ok: false, code: ErrorCode.AUTH, message: `credential ${claims.id} is revoked` };
    return { ok: true, claims };
  }

  close(): void {
    this.revoked.close();
  }

  private forgetOld(nowMs: number): void {
    for (const [nonce, until] of this.seen) {
      if (until >= nowMs) break;
      this.seen.delete(nonce);
    }
  }
}
