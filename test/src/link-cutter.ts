import net from 'node:net';

/**
 * A TCP relay in front of one peer link that can go silent right after a chosen message passed: armed
 * with a word (say "prepare"), it forwards the chunk that carries it and then drops every later byte
 * in both directions while keeping both sockets open, so neither end sees a close, only silence. A test
 * then knows that a barrier was in the middle when it kills or stops a process. The words of the peer
 * protocol travel as plain UTF-8 (its frames are authenticated, not encrypted). It can also delay every
 * byte by a fixed time each way: a peer farther away than the others.
 */
export class LinkCutter {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private armed: Buffer | undefined;
  private cut = false;
  private onCut: (() => void) | undefined;
  /** Resolves once the armed word passed and the link went silent. */
  silent: Promise<void> = Promise.resolve();
  port = 0;

  constructor(
    private readonly upstreamHost: string,
    private readonly upstreamPort: number,
    /** One-way delay of every chunk, in both directions; order is kept. Default 0. */
    private readonly delayMs = 0,
  ) {
    this.server = net.createServer((client) => this.accept(client));
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', () => resolve()));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Goes silent right after the next chunk, in either direction, that carries `word`. */
  arm(word: string): Promise<void> {
    this.armed = Buffer.from(word, 'utf8');
    this.silent = new Promise((resolve) => (this.onCut = resolve));
    return this.silent;
  }

  /** Forwards again (connections made from now on; the silent ones stay silent until closed). */
  heal(): void {
    this.cut = false;
    this.armed = undefined;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    const upstream = net.connect(this.upstreamPort, this.upstreamHost);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        this.sockets.delete(s);
        // A close is news the test did not ask for; while silent, an end that closes is not told.
        if (!this.cut) (s === client ? upstream : client).destroy();
      });
    }
    const relay = (from: net.Socket, to: net.Socket): void => {
      from.on('data', (chunk: Buffer) => {
        if (this.cut) return;
        if (this.delayMs > 0) setTimeout(() => this.cut || to.destroyed || to.write(chunk), this.delayMs);
        else to.write(chunk);
        if (this.armed !== undefined && chunk.includes(this.armed)) {
          this.cut = true;
          this.armed = undefined;
          this.onCut?.();
        }
      });
    };
    relay(client, upstream);
    relay(upstream, client);
  }
}
