import http, { type IncomingMessage, type Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { jsonApi, type AgentHello, type Logger, type ProcessorHello, type Route } from '@site-recovery/shared';
import { WebSocketServer, type WebSocket } from 'ws';
import { AgentSession } from './agent-session.js';
import { HealthCheck } from './health.js';
import { CloseCode, PeerConnection, type RoleSession } from './peer-connection.js';
import { ProcessorSession } from './processor-session.js';
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
}

/** How long a closing connection gets to finish its close handshake at shutdown. */
const SHUTDOWN_GRACE_MS = 1000;

/**
 * The cache-store's listener: one HTTP server with the WebSocket endpoint for agents and processors
 * (any path) plus `GET /status` and `GET /health` (health.ts), answered through the shared JSON API
 * module (plain requests arrive on 'request', upgrades go to ws). It serves the streams of a {@link StreamStore}
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
    readonly address: { readonly host: string; readonly port: number },
  ) {}

  static async start(options: CacheStoreServerOptions): Promise<CacheStoreServer> {
    const limits: CacheStoreLimits = { ...DEFAULT_CACHE_STORE_LIMITS, ...options.limits };
    const server = options.server ?? http.createServer();
    const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: limits.maxFrameBytes });
    const hub = new StreamHub(options.store, options.log, limits.maxVms);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port, options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const a = server.address() as AddressInfo;
    const self = new CacheStoreServer(server, wss, hub, limits, options.log, { host: a.address, port: a.port });
    server.on(
      'request',
      jsonApi(self.routes(), { log: options.log, hint: 'try /status, /health or a WebSocket upgrade' }),
    );
    server.on('error', (err) => options.log.error({ err: err.message }, 'http server error'));
    wss.on('connection', (ws, req) => self.onConnection(ws, req));
    wss.on('error', (err) => options.log.error({ err: err.message }, 'websocket server error'));
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
    };
  }

  private onConnection(ws: WebSocket, req: IncomingMessage): void {
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
      remote,
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
      { method: 'GET', path: '/health', handler: () => health.answer() },
    ];
  }

  /** Stops listening and closes every connection; the store stays open. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
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
