import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { ErrorCode } from '../errors.js';
import { ID_PATTERN } from '../ids.js';

/**
 * Bearer credentials of site-recovery: `srt1.<claims>.<mac>`, both parts base64url, the MAC an
 * HMAC-SHA256 of `srt1.<claims>` under the secret of the daemon that checks the token (the
 * cache-store's for agent and processor tokens, the processor's for operator tokens). The MAC never
 * travels: a client proves it holds it per request (proof.ts), so a captured request is no token.
 */
export const TOKEN_PREFIX = 'srt1';

export type TokenRole = 'agent' | 'processor' | 'operator';

export interface TokenClaims {
  /** Names the token in revocation files and audit logs; never secret. */
  readonly id: string;
  readonly role: TokenRole;
  /** The one VM an agent token may stream; absent for other roles. */
  readonly vm?: string;
  /** Seconds since the epoch. */
  readonly issuedAt: number;
  /** Seconds since the epoch; the token is refused from this second on. */
  readonly expiresAt: number;
}

const ClaimsSchema = z
  .object({
    id: z.string().regex(ID_PATTERN),
    role: z.enum(['agent', 'processor', 'operator']),
    vm: z.string().regex(ID_PATTERN).optional(),
    issuedAt: z.number().int().nonnegative(),
    expiresAt: z.number().int().positive(),
  })
  .strict()
  .refine((c) => (c.role === 'agent') === (c.vm !== undefined), 'an agent token names one VM; no other role does');

/** What a parsed token holds: the claims as sent, and the MAC it must carry. */
export interface ParsedToken {
  readonly claims: TokenClaims;
  /** `srt1.<claims>`, the text the MAC covers. */
  readonly signed: string;
  readonly mac: Buffer;
}

export type TokenFailure = { readonly ok: false; readonly code: ErrorCode; readonly message: string };

/** Longest token text accepted: claims are a few short fields. */
export const MAX_TOKEN_CHARS = 1024;

export function macOf(secret: Buffer, signed: string): Buffer {
  return createHmac('sha256', secret).update(signed).digest();
}

/** A new token for `claims`, signed with `secret`. */
export function issueToken(secret: Buffer, claims: TokenClaims): string {
  const checked = ClaimsSchema.parse(claims);
  const signed = `${TOKEN_PREFIX}.${Buffer.from(JSON.stringify(checked)).toString('base64url')}`;
  return `${signed}.${macOf(secret, signed).toString('base64url')}`;
}

const fail = (message: string): TokenFailure => ({ ok: false, code: ErrorCode.AUTH, message });

/** Splits `srt1.<claims>[.<mac>]` and checks the claims' shape; the MAC is not checked here. */
export function parseClaims(
  text: string,
): { ok: true; claims: TokenClaims; signed: string; rest: string[] } | TokenFailure {
  if (text.length > MAX_TOKEN_CHARS) return fail('credential too long');
  const parts = text.split('.');
  if (parts[0] !== TOKEN_PREFIX || parts.length < 2) return fail('not a site-recovery credential (srt1)');
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
  } catch {
    return fail('credential claims are not readable');
  }
  const claims = ClaimsSchema.safeParse(raw);
  if (!claims.success) return fail('credential claims are malformed');
  return { ok: true, claims: claims.data, signed: `${parts[0]}.${parts[1]}`, rest: parts.slice(2) };
}

/** Parses a whole token (as held in a token file). */
export function parseToken(text: string): ({ ok: true } & ParsedToken) | TokenFailure {
  const p = parseClaims(text.trim());
  if (!p.ok) return p;
  if (p.rest.length !== 1 || p.rest[0] === '') return fail('a token has three parts: srt1.<claims>.<mac>');
  const mac = Buffer.from(p.rest[0]!, 'base64url');
  if (mac.length !== 32) return fail('token MAC has the wrong length');
  return { ok: true, claims: p.claims, signed: p.signed, mac };
}

/** True when `a` and `b` are equal, in time that depends only on their lengths. */
export function sameBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
