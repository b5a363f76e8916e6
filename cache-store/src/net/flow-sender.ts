import { WebSocket } from 'ws';

/**
 * Sends on one WebSocket without letting its outgoing buffer grow without bound: senders of bulk
 * data wait for `ready()` while `bufferedAmount` is above the limit, and are let go from the send
 * callbacks as the socket drains. Small control messages go out at once (order is kept by ws).
 */
export class FlowSender {
  private waiters: (() => void)[] = [];
  private closed = false;

  constructor(
    private readonly ws: WebSocket,
    /** Bulk senders wait while more than this many bytes are queued. */
    readonly maxBufferedBytes: number,
  ) {}

  get hasRoom(): boolean {
    return this.closed || this.ws.bufferedAmount < this.maxBufferedBytes;
  }

  /** Resolves once there is room (at once when there is, or when the connection closed). */
  ready(): Promise<void> {
    if (this.hasRoom) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  send(data: Buffer): void {
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(data, { binary: true }, this.onSent);
  }

  /** Lets every waiter go; later sends are dropped. */
  close(): void {
    this.closed = true;
    this.release();
  }

  private readonly onSent = (): void => {
    // A failed send closes the socket; its close handler stops the senders.
    if (this.waiters.length > 0 && this.hasRoom) this.release();
  };

  private release(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
