import type http from 'node:http';
import {
  AUTH_HEADER,
  ErrorCode,
  SrError,
  checkRequest,
  isLoopbackHost,
  parseClaims,
  type Authorization,
  type TokenVerifier,
} from '@site-recovery/shared';
import type { AuditLog } from './audit-log.js';

/** Every role a token may carry: the role is checked after the proof, so a wrong one is a 403, not a 401. */
const ANY_ROLE = ['agent', 'processor', 'operator'] as const;

/**
 * The control API's gate: a proof of an operator token signed with the processor's own secret (so a
 * token minted with the source region's secret is refused), checked once per request; each refusal
 * goes to the audit log with the id the credential claims and where it came from.
 */
export function operatorAuthorizer(
  verifier: TokenVerifier,
  audit: AuditLog | undefined,
): (req: http.IncomingMessage) => Authorization {
  return (req) => {
    const refuse = (status: number, code: string, message: string): Authorization => {
      audit?.refusal({
        claimedId: claimedId(req),
        code,
        method: req.method ?? '?',
        path: pathOf(req),
        remote: req.socket.remoteAddress,
      });
      return { ok: false, status, code, message };
    };
    const r = checkRequest(verifier, req, ANY_ROLE);
    if (!r.ok) {
      const hint =
        r.code === ErrorCode.AUTH
          ? '; prove an operator token of this processor in the x-sr-auth header (docs/security.md)'
          : '';
      return refuse(r.code === ErrorCode.LIMIT ? 429 : 401, r.code, r.message + hint);
    }
    const { id, role } = r.claims;
    if (role !== 'operator')
      return refuse(403, ErrorCode.AUTH, `a ${role} token (${id}) may not use the control API; use an operator token`);
    return { ok: true, caller: { id, role } };
  };
}

/** The id a refused credential claims, if its claims can be read (ids match ID_PATTERN: safe to log). */
function claimedId(req: http.IncomingMessage): string | undefined {
  const header = req.headers[AUTH_HEADER];
  const text = Array.isArray(header) ? header[0] : header;
  if (text === undefined) return undefined;
  const p = parseClaims(text);
  return p.ok ? p.claims.id : undefined;
}

function pathOf(req: http.IncomingMessage): string {
  try {
    return new URL(req.url ?? '/', 'http://localhost').pathname.slice(0, 256);
  } catch {
    return '?';
  }
}

/**
 * One `--allowed-hosts` entry: HOST or HOST:PORT (IPv6 in brackets). Lower-cased; SR_BAD_OPTION when
 * it cannot be a Host header.
 */
export function parseAllowedHost(entry: string): string {
  const e = entry.trim().toLowerCase();
  if (!/^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:\d{1,5})?$/.test(e))
    throw new SrError(ErrorCode.BAD_OPTION, `--allowed-hosts entry "${entry}" is not HOST or HOST:PORT`);
  return e;
}

/**
 * Host headers the control API serves (a DNS-rebinding page sends its own name and is refused):
 * the listen address; when it is loopback, localhost, 127.0.0.1 and [::1] with its port; and each
 * `--allowed-hosts` entry, one without a port standing for that host with the listen port or none
 * (a proxy on the scheme's default port). `port` is read per request: port 0 is bound at start.
 */
export function hostAllowList(
  listenHost: string,
  port: () => number,
  allowed: readonly string[] = [],
): (host: string) => boolean {
  const bare = listenHost.replace(/^\[|\]$/g, '').toLowerCase();
  const listenName = bare.includes(':') ? `[${bare}]` : bare;
  const names = new Set([listenName]);
  if (isLoopbackHost(bare)) for (const n of ['localhost', '127.0.0.1', '[::1]']) names.add(n);
  const exact = new Set(allowed.filter((a) => /:\d+$/.test(a)));
  const anyPort = new Set(allowed.filter((a) => !/:\d+$/.test(a)));
  return (host) => {
    const h = host.toLowerCase();
    if (exact.has(h) || anyPort.has(h)) return true;
    const m = /^(.*):(\d+)$/.exec(h);
    if (m === null || Number(m[2]) !== port()) return false;
    return names.has(m[1]!) || anyPort.has(m[1]!);
  };
}
