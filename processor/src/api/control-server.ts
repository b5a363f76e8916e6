import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { ErrorCode, SrError, type Logger } from '@site-recovery/shared';
import { httpError } from './error-codes.js';

export interface ControlServerOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** Serve HTTPS with these options (key, cert, ...) instead of plain HTTP. */
  readonly tls?: https.ServerOptions;
}

export type Method = 'GET' | 'POST' | 'PUT';

export interface RouteRequest {
  /** `:name` segments of the route, decoded (handlers validate them: they may become file names). */
  readonly params: Readonly<Record<string, string>>;
  /** The parsed JSON body; `{}` when there is none. */
  readonly body: unknown;
}

export interface Route {
  readonly method: Method;
  /** `/vms/:vm/points`: literal segments and `:name` parameters. */
  readonly path: string;
  readonly handler: (req: RouteRequest) => unknown;
}

export interface ControlServerLimits {
  /** Largest request body accepted. Default 64 KiB: every request is a small JSON object. */
  readonly maxBodyBytes?: number;
}

export const DEFAULT_MAX_BODY_BYTES = 64 * 1024;

/**
 * The processor's HTTP listener: `/health`, `/status` and the control API the `sr` CLI talks to.
 * JSON in and out; a failure is `{code, message}` with a 4xx status for what the caller can fix (see
 * error-codes.ts). Plain or TLS is one option, so authentication can be added without touching the
 * handlers.
 */
export class ControlServer {
  private constructor(
    private readonly server: http.Server | https.Server,
    readonly address: AddressInfo,
  ) {}

  static async listen(
    o: ControlServerOptions & ControlServerLimits,
    routes: readonly Route[],
    log: Logger,
  ): Promise<ControlServer> {
    const maxBody = o.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      let path: string;
      try {
        path = new URL(req.url ?? '/', 'http://localhost').pathname;
      } catch {
        return reply(res, 400, { code: ErrorCode.PROTOCOL, message: 'unparseable request URL' });
      }
      const matches = routes.map((r) => ({ r, params: match(r.path, path) })).filter((m) => m.params !== undefined);
      if (matches.length === 0)
        return reply(res, 404, {
          code: 'SR_NOT_FOUND',
          message: `no such path ${path}; try /health, /status or /vms/VM/points`,
        });
      const method = req.method === 'HEAD' ? 'GET' : req.method;
      const found = matches.find((m) => m.r.method === method);
      if (found === undefined) {
        const allowed = [...new Set(matches.map((m) => m.r.method))];
        res.setHeader('allow', allowed.join(', '));
        return reply(res, 405, {
          code: 'SR_METHOD_NOT_ALLOWED',
          message: `${req.method ?? '?'} is not allowed on ${path}; use ${allowed.join(' or ')}`,
        });
      }
      readBody(req, maxBody)
        .then((body) => found.r.handler({ params: found.params!, body }))
        .then(
          (result) => reply(res, 200, result, req.method === 'HEAD'),
          (err: unknown) => {
            const { status, body } = httpError(err);
            if (status >= 500) log.error({ path, code: body.code, err: body.message }, 'control request failed');
            reply(res, status, body);
          },
        );
    };
    const server = o.tls !== undefined ? https.createServer(o.tls, handler) : http.createServer(handler);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.port, o.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => log.error({ err: err.message }, 'control server error'));
    return new ControlServer(server, server.address() as AddressInfo);
  }

  /** host:port as bound, IPv6 in brackets. */
  get listen(): string {
    const host = this.address.family === 'IPv6' ? `[${this.address.address}]` : this.address.address;
    return `${host}:${this.address.port}`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
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

/** The request's JSON body (`{}` when empty); SR_LIMIT past `max` bytes, SR_BAD_OPTION when not JSON. */
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
