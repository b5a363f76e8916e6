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
  answerInJson(server);
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

/**
 * Requests Node refuses before any handler sees them (malformed HTTP, oversized headers, an unknown
 * `Expect`) are answered in the same `{code, message}` JSON as everything else, so a client always
 * gets an error it can read.
 */
export function answerInJson(server: http.Server | https.Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy();
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
    const body = JSON.stringify({
      code: tooLarge ? 'SR_LIMIT' : 'SR_PROTOCOL',
      message: tooLarge ? 'request headers too large' : 'malformed HTTP request',
    });
    socket.end(
      `HTTP/1.1 ${tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
  server.on('checkExpectation', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const body = JSON.stringify({
      code: 'SR_PROTOCOL',
      message: `Expect: ${req.headers.expect ?? ''} is not supported`,
    });
    res.writeHead(417, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
  });
}
