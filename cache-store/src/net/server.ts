import http, { type IncomingMessage, type Server as HttpServer } from 'node:http';
import https, { type Server as HttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  ErrorCode,
  answerInJson,
  SrError,
  jsonApi,
  refuseUpgrade,
  type AgentHello,
  type Logger,
  type ProcessorHello,
  type Route,
  type TokenVerifier,
} from '@site-recovery/shared';
import { WebSocketServer, type WebSocket } from 'ws';
import { AgentSession } from './agent-session.js';
import { checkUpgrade, processorAuthorizer, type PeerCredential } from './auth.js';
import { HealthCheck, healthRoutes } from './health.js';
import { CloseCode, PeerConnection, type RoleSession } from './peer-connection.js';
import { ProcessorSession } from './processor-session.js';
import { SourceConnections } from './source-connections.js';
import { DEFAULT_CACHE_STORE_LIMITS, type CacheStoreLimits, type CacheStoreServerOptions } from './server-options.js';
import { StreamHub, type VmStatus } from './stream-hub.js';
import type { DamagedStream, StreamStore } from '../log/stream-log.js';

/** `GET /status`. */
export interface CacheStoreStatus {
  readonly listen: string;
  readonly vms: readonly VmStatus[];
  /** VMs the cache-store holds state for: `vms` plus VMs named by a connection that have no stream yet. */
  readonly trackedVms: number;
  /** The most it tracks; a new VM past it is refused (SR_LIMIT). */
  readonly maxVms: number;
  /** VMs set aside because their stored stream is damaged (see StreamStore.damaged). */
  readonly damaged?: readonly DamagedStream[];
  /** Connections closed at once because their source address was at `maxConnectionsPerSource`. */
  readonly refusedConnections: number;
  /** Whether upgrades and routes need a token (false: started without a verifier, `--insecure`). */
  readonly authentication: boolean;
  readonly tls: boolean;
}

/** How long a closing connection gets to finish its close handshake at shutdown. */
const SHUTDOWN_GRACE_MS = 1000;

/**
 * The cache-store's listener: one HTTP(S) server with the WebSocket endpoint for agents and
 * processors (any path) plus `GET /status` and the health routes (health.ts), answered through the
 * shared JSON API module. Plain requests arrive on 'request'; upgrades are checked here (per-source
 * cap, credential: auth.ts) before ws reads a frame. It serves the streams of a {@link StreamStore}
 * it does not own: the caller closes the store after the server.
 */
export class CacheStoreServer {
  private readonly connections = new Set<PeerConnection>();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly http: HttpServer | HttpsServer,
    private readonly wss: WebSocketServer,
    private readonly hub: StreamHub,
    private readonly limits: CacheStoreLimits,
    private readonly log: Logger,
    private readonly sources: SourceConnections,
    private readonly verifier: TokenVerifier | undefined,
    private readonly isTls: boolean,
    readonly address: { readonly host: string; readonly port: number },
  ) {}

  static async start(options: CacheStoreServerOptions): Promise<CacheStoreServer> {
    const limits: CacheStoreLimits = { ...DEFAULT_CACHE_STORE_LIMITS, ...options.limits };
    const { log, verifier } = options;
    if (options.server !== undefined && options.tls !== undefined)
      throw new SrError(ErrorCode.BAD_OPTION, 'give the cache-store server either `server` or `tls`, not both');
    const server =
      options.server ?? (options.tls !== undefined ? https.createServer(options.tls) : http.createServer());
    const isTls = server instanceof https.Server;
    answerInJson(server);
    const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: limits.maxFrameBytes });
    const hub = new StreamHub(options.store, log, limits.maxVms);
    const sources = new SourceConnections(limits.maxConnectionsPerSource, log);
    // First of the listeners: a connection past the cap is closed before TLS or HTTP look at it.
    server.prependListener('connection', (socket: Socket) => sources.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port, options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const a = server.address() as AddressInfo;
    const self = new CacheStoreServer(server, wss, hub, limits, log, sources, verifier, isTls, {
      host: a.address,
      port: a.port,
    });
    server.on(
      'request',
      jsonApi(self.routes(), {
        log,
        hint: 'try /status, /health, /health/details or a WebSocket upgrade',
        ...(verifier !== undefined ? { authorize: processorAuthorizer(verifier) } : {}),
      }),
    );
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => self.onUpgrade(req, socket, head));
    server.on('error', (err) => log.error({ err: err.message }, 'http server error'));
    // A plaintext client of a TLS listener ends here: it is refused, it reaches nothing. A peer that
    // leaves mid-handshake (a client refusing our certificate, a port probe, the per-source cap) is no news.
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: Socket) =>
      log[err.code === 'ECONNRESET' ? 'debug' : 'warn'](
        { remote: socket.remoteAddress, tlsCode: err.code, err: err.message.trim() },
        'TLS handshake refused',
      ),
    );
    wss.on('error', (err) => log.error({ err: err.message }, 'websocket server error'));
    if (verifier !== undefined)
      self.credentialTimer = setInterval(() => self.recheckCredentials(), limits.credentialCheckMs);
    self.credentialTimer?.unref();
    return self;
  }

  /** HOST:PORT as bound (IPv6 in brackets). */
  get listen(): string {
    const { host, port } = this.address;
    return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  }

  get store(): StreamStore {
    return this.hub.store;
  }

  status(): CacheStoreStatus {
    const damaged = this.hub.store.damaged();
    return {
      listen: this.listen,
      vms: this.hub.status(),
      trackedVms: this.hub.trackedVms,
      maxVms: this.hub.maxVms,
      ...(damaged.length > 0 ? { damaged } : {}),
      refusedConnections: this.sources.refused,
      authentication: this.verifier !== undefined,
      tls: this.isTls,
    };
  }

  private credentialTimer: NodeJS.Timeout | undefined;

  /** Ends the sessions whose token expired or was revoked after their upgrade. */
  private recheckCredentials(): void {
    const verifier = this.verifier;
    if (verifier === undefined) return;
    for (const c of this.connections) {
      if (c.credential.open) continue;
      const r = verifier.stillValid(c.credential.claims);
      if (r.ok) continue;
      // Reported to the peer as `{t:'error', code}` and logged once by the connection, like any refusal.
      c.fail(new SrError(r.code, `${r.message} since this session began; it is closed`));
    }
  }

  /** Checks an upgrade before ws reads a frame: refused ones get HTTP 401/403/503 `{code, message}`. */
  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const remote = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`;
    // A peer that resets a refused socket must not take the process down with an unhandled error.
    socket.on('error', () => undefined);
    if (this.closing !== undefined)
      return refuseUpgrade(socket, 503, ErrorCode.SHUTTING_DOWN, 'the cache-store is shutting down');
    const auth = checkUpgrade(this.verifier, req);
    if (!auth.ok) {
      this.log.warn({ remote, code: auth.code, status: auth.status, err: auth.message }, 'upgrade refused');
      return refuseUpgrade(socket, auth.status, auth.code, auth.message);
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, req, auth.credential));
  }

  private onConnection(ws: WebSocket, req: IncomingMessage, credential: PeerCredential): void {
    const remote = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`;
    if (this.closing !== undefined) {
      ws.close(CloseCode.GOING_AWAY, 'shutting down');
      return;
    }
    if (this.connections.size >= this.limits.maxConnections) {
      this.log.warn({ remote, max: this.limits.maxConnections }, 'connection refused: at maxConnections');
      ws.close(CloseCode.TRY_AGAIN_LATER, `at ${this.limits.maxConnections} connections; try again later`);
      return;
    }
    const conn = new PeerConnection(
      ws,
      req.socket,
      remote,
      credential,
      this.limits,
      this.log,
      (c, hello) => this.sessionFor(c, hello),
      (c) => this.connections.delete(c),
    );
    this.connections.add(conn);
  }

  private sessionFor(conn: PeerConnection, hello: AgentHello | ProcessorHello): RoleSession {
    return hello.role === 'agent'
      ? new AgentSession(conn, this.hub, hello, this.limits)
      : new ProcessorSession(conn, this.hub, this.limits);
  }

  private routes(): Route[] {
    const health = new HealthCheck(this.hub, this.log);
    return [
      { method: 'GET', path: '/status', handler: () => this.status() },
      ...healthRoutes(health, this.verifier !== undefined),
    ];
  }

  /** Stops listening and closes every connection; the store stays open. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.credentialTimer);
    const sockets = [...this.wss.clients];
    for (const c of [...this.connections]) c.close(CloseCode.GOING_AWAY, 'shutting down');
    await Promise.all(
      sockets.map(
        (ws) =>
          new Promise<void>((resolve) => {
            if (ws.readyState === ws.CLOSED) return resolve();
            const timer = setTimeout(() => {
              ws.terminate();
              resolve();
            }, SHUTDOWN_GRACE_MS);
            ws.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
          }),
      ),
    );
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await new Promise<void>((resolve) => {
      this.http.close(() => resolve());
      this.http.closeAllConnections();
    });
  }
}
