import net from 'node:net';
import type { Logger } from '../index.js';
import { NbdConnection } from './connection.js';
import type { ExportRegistry } from './export-registry.js';
import { DEFAULT_NBD_LIMITS, type NbdServerLimits } from './limits.js';
import { PayloadPool, type PayloadPoolOptions } from './payload-pool.js';

export interface NbdServerOptions {
  readonly exports: ExportRegistry;
  readonly log: Logger;
  readonly limits?: Partial<NbdServerLimits>;
  /** Slabs for WRITE payloads, shared by all connections. */
  readonly payloadPool?: PayloadPoolOptions;
}

/** A TCP listener speaking NBD; one {@link NbdConnection} per client. */
export class NbdServer {
  private readonly server: net.Server;
  private readonly connections = new Set<NbdConnection>();
  readonly limits: NbdServerLimits;
  private readonly pool: PayloadPool;
  private refused = 0;

  constructor(private readonly options: NbdServerOptions) {
    this.limits = { ...DEFAULT_NBD_LIMITS, ...options.limits };
    this.pool = new PayloadPool(options.payloadPool);
    this.server = net.createServer((socket) => this.accept(socket));
  }

  private accept(socket: net.Socket): void {
    if (this.connections.size >= this.limits.maxConnections) {
      this.refused++;
      this.options.log.warn(
        {
          remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`,
          maxConnections: this.limits.maxConnections,
        },
        'nbd connection refused: the server is at maxConnections; close an idle client or raise the limit',
      );
      socket.on('error', () => undefined); // a reset from the peer we are dropping is no news
      socket.destroy();
      return;
    }
    const c = new NbdConnection(socket, this.options.exports, this.limits, this.options.log, this.pool);
    this.connections.add(c);
    void c.closed.then(() => this.connections.delete(c));
  }

  /** Starts listening; resolves to the bound address (port 0 picks a free port). */
  listen(host: string, port: number): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port }, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as net.AddressInfo);
      });
    });
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Connections closed on accept because `maxConnections` were open, since the server started. */
  get refusedConnections(): number {
    return this.refused;
  }

  /** Stops accepting, drops every connection, and resolves when all sockets are closed. */
  async close(): Promise<void> {
    const closing = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.connections) c.abort('server closing');
    await Promise.all([...this.connections].map((c) => c.closed));
    await closing;
    this.options.log.debug('nbd server closed');
  }
}
