/**
 * The one place the cache-store decides who may do what (DESIGN.md, "Security from the start"):
 * - a WebSocket upgrade needs an agent or processor token, checked before a frame is read;
 * - an agent token streams only the VM it names (hello, batches, a new generation of it);
 * - a processor token reads streams, acknowledges and subscribes; it cannot write;
 * - `GET /status` and the health details need a processor token; the bare `GET /health` is open.
 * Without a verifier (the library's default, what `--insecure` gives) everyone may do everything.
 */
import type { IncomingMessage } from 'node:http';
import {
  ErrorCode,
  SrError,
  checkRequest,
  type AgentHello,
  type Authorization,
  type ProcessorHello,
  type TokenClaims,
  type TokenRole,
  type TokenVerifier,
} from '@site-recovery/shared';

/** Who a connection is, as its upgrade found: a token's claims, or anyone when authentication is off. */
export type PeerCredential = { readonly open: true } | { readonly open: false; readonly claims: TokenClaims };

export const OPEN_CREDENTIAL: PeerCredential = { open: true };

/** Roles that may open a WebSocket to the cache-store. */
const PEER_ROLES: readonly TokenRole[] = ['agent', 'processor'];
/** Every role, so that a well-proven token of another role is told 403 (not 401). */
const ANY_ROLE: readonly TokenRole[] = ['agent', 'processor', 'operator'];

/** Why a request or upgrade is refused: the HTTP status and the `{code, message}` body. */
type Refusal = { readonly ok: false; readonly status: number; readonly code: string; readonly message: string };

export type UpgradeCheck = { readonly ok: true; readonly credential: PeerCredential } | Refusal;

/**
 * Checks a request's proof and its role: 401 when the proof fails (missing, malformed, wrong secret,
 * expired, revoked, stale, replayed), 403 when a valid token has a role not in `roles`, 503 when the
 * verifier is at its limit of remembered nonces.
 */
function checkRole(
  verifier: TokenVerifier,
  req: IncomingMessage,
  roles: readonly TokenRole[],
  what: string,
): { readonly ok: true; readonly claims: TokenClaims } | Refusal {
  const r = checkRequest(verifier, req, ANY_ROLE);
  if (!r.ok) return { ok: false, status: r.code === ErrorCode.LIMIT ? 503 : 401, code: r.code, message: r.message };
  if (!roles.includes(r.claims.role)) {
    const message = `a ${r.claims.role} credential (${r.claims.id}) may not ${what}; use a ${roles.join(' or ')} token`;
    return { ok: false, status: 403, code: ErrorCode.AUTH, message };
  }
  return { ok: true, claims: r.claims };
}

/** A WebSocket upgrade: an agent or processor token, or anyone without a verifier. */
export function checkUpgrade(verifier: TokenVerifier | undefined, req: IncomingMessage): UpgradeCheck {
  if (verifier === undefined) return { ok: true, credential: OPEN_CREDENTIAL };
  const r = checkRole(verifier, req, PEER_ROLES, 'connect to the cache-store');
  return r.ok ? { ok: true, credential: { open: false, claims: r.claims } } : r;
}

/**
 * The hello against the credential its connection was opened with. Throws SR_AUTH before anything
 * the hello names is looked up or changed: an agent token of another VM starts no generation and
 * touches no stored stream, a processor token cannot write, an agent token cannot read or acknowledge.
 */
export function checkHello(credential: PeerCredential, hello: AgentHello | ProcessorHello): void {
  if (credential.open) return;
  const { claims } = credential;
  if (hello.role === 'agent') {
    if (claims.role !== 'agent')
      throw new SrError(ErrorCode.AUTH, `a ${claims.role} credential (${claims.id}) may not stream as an agent`);
    if (claims.vm !== hello.vm)
      throw new SrError(
        ErrorCode.AUTH,
        `credential ${claims.id} is for VM "${claims.vm ?? ''}", not "${hello.vm}": issue a token for this VM`,
      );
    return;
  }
  if (claims.role !== 'processor')
    throw new SrError(ErrorCode.AUTH, `a ${claims.role} credential (${claims.id}) may not act as the processor`);
}

/** jsonApi's `authorize` for the routes that need a processor token (status, health details). */
export function processorAuthorizer(verifier: TokenVerifier): (req: IncomingMessage) => Authorization {
  return (req) => {
    const r = checkRole(verifier, req, ['processor'], 'read the cache-store status');
    return r.ok ? { ok: true, caller: { id: r.claims.id, role: r.claims.role } } : r;
  };
}
