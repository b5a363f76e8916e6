import WebSocket from 'ws';
import { ErrorCode, encodeMessage, type DiskInfo, type Policy } from '@site-recovery/shared';
import type { SumsReplies } from './sums-reply.js';

/** A VM's policy as relayed to its agent: what the `policy` message carries besides its type and VM. */
export type AgentPolicy = Omit<Policy, 't' | 'vm'>;

/** One WebSocket to the cache-store and what the puller knows of it; a redial makes a new one. */
export class Connection {
  /** VM → the cache-store generation it was subscribed at. */
  readonly subscribed = new Map<string, string>();
  /** VM → the stream the cache-store announced (batches are checked against it). */
  readonly streams = new Map<string, { generation: string; disks: readonly DiskInfo[] }>();
  /** VM → the replication group its last policy on this connection was sent for (null: none). */
  readonly policyGroup = new Map<string, string | null>();
  listed = false;
  /** The cache-store answered the upgrade with an HTTP error (its code is the last error). */
  refused = false;
  closed = false;
  faulted = false;
  alive = true;
  queuedBytes = 0;
  heartbeat: NodeJS.Timeout | undefined;
  /** The sums requests answered on this connection. */
  sums: SumsReplies | undefined;

  constructor(readonly ws: WebSocket) {}

  /** Sends if the socket is open; false when it is not. */
  send(message: object): boolean {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(encodeMessage(message));
    return true;
  }

  /** Sends and resolves once the message is written out; false when the connection is gone. */
  sendFlushed(message: object): Promise<boolean> {
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) return Promise.resolve(false);
    return new Promise((resolve) => this.ws.send(encodeMessage(message), (err) => resolve(err == null)));
  }

  /** Closes with `code` (cut after a grace period); anything but a normal close marks it faulted. */
  drop(code: number, reason: string): void {
    this.closed = true;
    if (code !== 1001 && code !== 1000) this.faulted = true;
    if (this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.terminate();
      return;
    }
    this.ws.close(code, reason);
    setTimeout(() => this.ws.terminate(), CLOSE_GRACE_MS).unref();
  }

  /** Pings every `ms`; a peer that has not answered the previous ping is cut (`dead` says so first). */
  startHeartbeat(ms: number, dead: () => void): void {
    this.ws.on('pong', () => (this.alive = true));
    this.heartbeat = setInterval(() => {
      if (!this.alive) {
        dead();
        this.ws.terminate();
        return;
      }
      this.alive = false;
      this.ws.ping();
    }, ms);
  }

  stopHeartbeat(): void {
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
  }
}

/** How long a closing connection may take before it is cut. */
const CLOSE_GRACE_MS = 2000;

/** Codes that say the cache-store sent something wrong (it is told); others are local faults. */
const PEER_FAULTS = new Set<string>([
  ErrorCode.PROTOCOL,
  ErrorCode.LIMIT,
  ErrorCode.CHECKSUM,
  ErrorCode.SEQUENCE,
  ErrorCode.BOUNDS,
  ErrorCode.GENERATION,
  ErrorCode.BAD_ID,
  ErrorCode.STATE_MISMATCH,
]);

export function isPeerFault(code: string): boolean {
  return PEER_FAULTS.has(code);
}
