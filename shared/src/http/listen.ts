import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../logger.js';

export interface HttpListenOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** Serve HTTPS with these options (key, cert, ...) instead of plain HTTP. */
  readonly tls?: https.ServerOptions;
}

/** A bound HTTP(S) server. */
export interface HttpListener {
  readonly server: http.Server | https.Server;
  readonly address: AddressInfo;
  /** host:port as bound, IPv6 in brackets. */
  readonly listen: string;
  /** Stops listening and drops open connections. */
  close(): Promise<void>;
}

/** Binds `handler` on host:port (TLS when given); resolves once listening, rejects if the bind fails. */
export async function listenHttp(
  o: HttpListenOptions,
  handler: http.RequestListener,
  log: Logger,
): Promise<HttpListener> {
  const server = o.tls !== undefined ? https.createServer(o.tls, handler) : http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err: err.message }, 'HTTP server error'));
  const address = server.address() as AddressInfo;
  return {
    server,
    address,
    listen: formatAddress(address),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** host:port of a bound socket, IPv6 in brackets. */
export function formatAddress(a: AddressInfo): string {
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}
