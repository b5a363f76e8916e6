import type http from 'node:http';
import { ErrorCode, SrError, isSrError } from '../errors.js';
import type { Logger } from '../logger.js';

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface RouteRequest {
  /** `:name` segments of the route, decoded (handlers validate them: they may become file names). */
  readonly params: Readonly<Record<string, string>>;
  /** The parsed JSON body; `{}` when there is none. */
  readonly body: unknown;
  /** Who `authorize` let in (a token id, for audit logs); undefined on open routes. */
  readonly caller?: Caller;
}

/** Who made a request, as `authorize` found. */
export interface Caller {
  readonly id: string;
  readonly role: string;
}

/** `authorize`'s answer: the caller, or why not (401 without a good credential, 403 with the wrong one). */
export type Authorization =
  | { readonly ok: true; readonly caller: Caller }
  | { readonly ok: false; readonly status: number; readonly code: string; readonly message: string };

export interface Route {
  readonly method: Method;
  /** `/vms/:vm/points`: literal segments and `:name` parameters. */
  readonly path: string;
  /** Its result is the 200 body, or a {@link JsonReply} for another status; a throw becomes an error body. */
  readonly handler: (req: RouteRequest) => unknown;
  /** Served without `authorize` (a bare liveness check); such a route must reveal nothing. */
  readonly open?: boolean;
}

/** A handler's answer with a status other than 200 (an unhealthy `/health` answers 503). */
export class JsonReply {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {}
}

/** The HTTP status and `{code, message}` body a thrown error becomes. */
export type ErrorMapper = (err: unknown) => { status: number; body: { code: string; message: string } };

export interface JsonApiOptions {
  readonly log: Logger;
  /** Largest request body accepted. Default {@link DEFAULT_MAX_BODY_BYTES}; past it, 413 `SR_LIMIT`. */
  readonly maxBodyBytes?: number;
  /** Maps handler errors; default {@link defaultHttpError}. */
  readonly httpError?: ErrorMapper;
  /** Said in a 404's message, e.g. "try GET /status". */
  readonly hint?: string;
  /**
   * Checks every request to a route that is not `open`, before its body is read. Without it every
   * route is served to everyone (a daemon started with --insecure on loopback).
   */
  readonly authorize?: (req: http.IncomingMessage) => Authorization;
  /**
   * Host headers served (DNS rebinding: a page of another site resolved to this address sends its own
   * name). Without it any Host is served. A request with another Host gets 421 `SR_BAD_HOST`.
   */
  readonly allowedHost?: (host: string) => boolean;
  /**
   * POST and PUT must say `Content-Type: application/json` even without a body (a cross-site `fetch`
   * may POST an empty body with no type). A body, or a type, other than JSON is refused (415) always.
   */
  readonly requireJsonContentType?: boolean;
}

/** Every request of these APIs is a small JSON object. */
export const DEFAULT_MAX_BODY_BYTES = 64 * 1024;

const SHARED_STATUS: Readonly<Record<string, number>> = {
  [ErrorCode.BAD_OPTION]: 400,
  [ErrorCode.BAD_ID]: 400,
  [ErrorCode.PROTOCOL]: 400,
  [ErrorCode.LIMIT]: 413,
  [ErrorCode.NO_SPACE]: 507,
};

/** Shared error codes to their status (what the caller can fix is 4xx); anything else is a 500. */
export function defaultHttpError(err: unknown): { status: number; body: { code: string; message: string } } {
  if (isSrError(err)) return { status: SHARED_STATUS[err.code] ?? 500, body: { code: err.code, message: err.message } };
  return { status: 500, body: { code: ErrorCode.INTERNAL, message: (err as Error).message } };
}

/**
 * One request handler for the JSON HTTP APIs of every daemon (agent status, cache-store status,
 * processor control API): routing with `:params`, 404 and 405 with an `allow` header, HEAD as GET,
 * a bounded JSON body, and every failure as `{code, message}`. It attaches to any `http.Server`, so a
 * server that also takes WebSocket upgrades uses it for its plain requests.
 */
export function jsonApi(
  routes: readonly Route[],
  options: JsonApiOptions,
): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const toHttp = options.httpError ?? defaultHttpError;
  return (req, res) => {
    let path: string;
    try {
      path = new URL(req.url ?? '/', 'http://localhost').pathname;
    } catch {
      return reply(res, 400, { code: ErrorCode.PROTOCOL, message: 'unparseable request URL' });
    }
    const matches = routes.map((r) => ({ r, params: match(r.path, path) })).filter((m) => m.params !== undefined);
    if (matches.length === 0) {
      const hint = options.hint === undefined ? '' : `; ${options.hint}`;
      return reply(res, 404, { code: 'SR_NOT_FOUND', message: `no such path ${path}${hint}` });
    }
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const found = matches.find((m) => m.r.method === method);
    if (found === undefined) {
      const allowed = [...new Set(matches.map((m) => m.r.method))];
      res.setHeader('allow', allowed.join(', '));
      const message = `${req.method ?? '?'} is not allowed on ${path}; use ${allowed.join(' or ')}`;
      return reply(res, 405, { code: 'SR_METHOD_NOT_ALLOWED', message });
    }
    const headOnly = req.method === 'HEAD';
    if (options.allowedHost !== undefined && !options.allowedHost(req.headers.host ?? '')) {
      const message = `Host "${req.headers.host ?? ''}" is not served here; add it to --allowed-hosts if it is yours`;
      return reply(res, 421, { code: 'SR_BAD_HOST', message });
    }
    let caller: Caller | undefined;
    if (options.authorize !== undefined && found.r.open !== true) {
      const auth = options.authorize(req);
      if (!auth.ok) return reply(res, auth.status, { code: auth.code, message: auth.message });
      caller = auth.caller;
    }
    // Browsers send form and text bodies across sites without asking first; JSON alone is taken.
    const contentType = req.headers['content-type'];
    const hasBody =
      req.headers['content-length'] !== undefined
        ? req.headers['content-length'] !== '0'
        : req.headers['transfer-encoding'] !== undefined;
    const declared = contentType !== undefined || hasBody || options.requireJsonContentType === true;
    if ((method === 'POST' || method === 'PUT') && declared && !isJson(contentType)) {
      const message = `${method} ${path} takes a JSON body: send Content-Type: application/json`;
      return reply(res, 415, { code: 'SR_UNSUPPORTED_MEDIA_TYPE', message });
    }
    readBody(req, maxBody)
      .then((body) => found.r.handler({ params: found.params!, body, ...(caller !== undefined ? { caller } : {}) }))
      .then(
        (result) =>
          result instanceof JsonReply
            ? reply(res, result.status, result.body, headOnly)
            : reply(res, 200, result, headOnly),
        (err: unknown) => {
          const { status, body } = toHttp(err);
          if (status >= 500) options.log.error({ path, code: body.code, err: body.message }, 'HTTP request failed');
          reply(res, status, body);
        },
      );
  };
}

function isJson(contentType: string | undefined): boolean {
  return contentType !== undefined && contentType.split(';')[0]!.trim().toLowerCase() === 'application/json';
}

/** The route's parameters if `path` matches `pattern`. */
function match(pattern: string, path: string): Record<string, string> | undefined {
  const want = pattern.split('/');
  const got = path.split('/');
  if (want.length !== got.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    const w = want[i]!;
    const g = got[i]!;
    if (w.startsWith(':')) {
      if (g === '') return undefined;
      try {
        params[w.slice(1)] = decodeURIComponent(g);
      } catch {
        return undefined;
      }
    } else if (w !== g) return undefined;
  }
  return params;
}

/** The request's JSON body (`{}` when empty); SR_LIMIT past `max` bytes (counted while reading). */
function readBody(req: http.IncomingMessage, max: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > max) {
        failed = true;
        reject(new SrError(ErrorCode.LIMIT, `request body larger than ${max} bytes`));
        req.resume();
        return;
      }
      parts.push(chunk);
    });
    req.on('error', (err) => {
      if (!failed) reject(err);
      failed = true;
    });
    req.on('end', () => {
      if (failed) return;
      const text = Buffer.concat(parts).toString('utf8').trim();
      if (text === '') return resolve({});
      try {
        resolve(JSON.parse(text) as unknown);
      } catch {
        reject(new SrError(ErrorCode.BAD_OPTION, 'request body is not JSON'));
      }
    });
  });
}

function reply(res: http.ServerResponse, status: number, body: unknown, headOnly = false): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(headOnly ? undefined : text);
}
