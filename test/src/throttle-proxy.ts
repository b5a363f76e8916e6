import net from 'node:net';

export interface ThrottleOptions {
  /** Upstream bytes per second in each direction; Infinity for no limit. */
  bytesPerSecond: number;
  /** Added one-way delay in ms. */
  delayMs: number;
}

/**
 * A TCP proxy that slows a link: a token bucket per direction plus a fixed delay, and a switch that
 * cuts the link (partition). Test helper standing in for netem, which these machines do not have.
 */
export class ThrottleProxy {
  private readonly server: net.Server;
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  private partitioned = false;
  port = 0;
  /** Bytes forwarded client → upstream. */
  forwarded = 0;

  constructor(
    private readonly upstreamHost: string,
    private readonly upstreamPort: number,
    readonly options: ThrottleOptions,
  ) {
    this.server = net.createServer((client) => this.accept(client));
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', () => resolve()));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  /** Cuts every connection and refuses new ones until `heal()`. */
  partition(): void {
    this.partitioned = true;
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    this.pairs.clear();
  }

  heal(): void {
    this.partitioned = false;
  }

  async close(): Promise<void> {
    this.partition();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    if (this.partitioned) {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.upstreamPort, this.upstreamHost);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    this.pairs.add(pair);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    this.pipe(client, upstream, true);
    this.pipe(upstream, client, false);
  }

  private pipe(from: net.Socket, to: net.Socket, count: boolean): void {
    let nextFree = Date.now();
    from.on('data', (chunk: Buffer) => {
      const now = Date.now();
      const sendMs = Number.isFinite(this.options.bytesPerSecond)
        ? (chunk.length / this.options.bytesPerSecond) * 1000
        : 0;
      nextFree = Math.max(nextFree, now) + sendMs;
      const at = nextFree + this.options.delayMs;
      if (count) this.forwarded += chunk.length;
      // Hold reading while this chunk waits, so the sender sees the slow link as TCP backpressure.
      from.pause();
      setTimeout(
        () => {
          if (!to.destroyed) to.write(chunk);
          if (!from.destroyed) from.resume();
        },
        Math.max(0, at - now),
      );
    });
  }
}
