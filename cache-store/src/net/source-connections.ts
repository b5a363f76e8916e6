import type { Socket } from 'node:net';
import { ErrorCode, type Logger } from '@site-recovery/shared';

/**
 * Open TCP connections per source address, counted as they are accepted, before TLS, HTTP or
 * any credential: one address that reaches the port cannot hold every connection the cache-store
 * takes. A connection past the limit is closed at once. Refusals are counted (status) and logged
 * once each time an address reaches its limit, not once per refused connection, so a flood
 * cannot fill the log.
 */
export class SourceConnections {
  private readonly open = new Map<string, number>();
  /** Addresses refused since they last had room, so each burst is logged once. */
  private readonly atLimit = new Set<string>();
  private refusedTotal = 0;

  constructor(
    private readonly max: number,
    private readonly log: Logger,
  ) {}

  /** Connections refused so far because their address was at the limit. */
  get refused(): number {
    return this.refusedTotal;
  }

  /** Counts `socket` in, or destroys it when its address is at the limit. */
  accept(socket: Socket): void {
    const source = sourceOf(socket);
    const n = this.open.get(source) ?? 0;
    if (n >= this.max) {
      this.refusedTotal++;
      if (!this.atLimit.has(source)) {
        this.atLimit.add(source);
        this.log.warn(
          { source, code: ErrorCode.LIMIT, max: this.max },
          'connections refused: this source address is at maxConnectionsPerSource (logged once per burst)',
        );
      }
      socket.destroy();
      return;
    }
    this.open.set(source, n + 1);
    socket.once('close', () => this.release(source));
  }

  private release(source: string): void {
    const n = (this.open.get(source) ?? 1) - 1;
    if (n > 0) this.open.set(source, n);
    else this.open.delete(source);
    this.atLimit.delete(source);
  }
}

/** The peer's address; an IPv4 peer on a dual-stack socket counts as its IPv4 address. */
function sourceOf(socket: Socket): string {
  const a = socket.remoteAddress ?? '?';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}
