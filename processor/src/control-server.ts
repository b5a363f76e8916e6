import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '@site-recovery/shared';

export interface ControlServerOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** Serve HTTPS with these options (key, cert, ...) instead of plain HTTP. */
  readonly tls?: https.ServerOptions;
}

/** GET handlers by path; each returns the JSON body. */
export type Routes = Readonly<Record<string, () => unknown>>;

/**
 * The processor's HTTP listener: read-only JSON for now (`/health`, `/status`); the control API the
 * `sr` CLI talks to grows here. Plain or TLS is one option, so authentication can be added without
 * touching the handlers.
 */
export class ControlServer {
  private constructor(
    private readonly server: http.Server | https.Server,
    readonly address: AddressInfo,
  ) {}

  static async listen(o: ControlServerOptions, routes: Routes, log: Logger): Promise<ControlServer> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      const path = new URL(req.url ?? '/', 'http://localhost').pathname;
      const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
      if (route === undefined) return reply(res, 404, { error: `no such path ${path}; try /health or /status` });
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('allow', 'GET, HEAD');
        return reply(res, 405, { error: `${req.method ?? '?'} is not allowed on ${path}` });
      }
      try {
        reply(res, 200, route(), req.method === 'HEAD');
      } catch (err) {
        log.error({ path, err: (err as Error).message }, 'control request failed');
        reply(res, 500, { error: (err as Error).message });
      }
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

function reply(res: http.ServerResponse, status: number, body: unknown, headOnly = false): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(headOnly ? undefined : text);
}
