import type { BackoffOptions, ParsedToken, WireLimits } from '@site-recovery/shared';
import type { SumsOptions } from './sums-reply.js';

/** How the puller reaches the cache-store, and how much of its stream it holds before it stops reading. */
export interface PullerOptions extends SumsOptions {
  /** `ws://` or `wss://` address of the cache-store. */
  readonly url: string;
  /** A processor token signed with the cache-store's secret; a fresh proof of it goes with every dial. */
  readonly token?: ParsedToken;
  /** Verifies a `wss://` cache-store's certificate; default the system's CAs. */
  readonly ca?: Buffer;
  readonly limits?: WireLimits;
  readonly backoff?: BackoffOptions;
  /** Time allowed for the WebSocket handshake. Default 10 s. */
  readonly connectTimeoutMs?: number;
  /** A ping goes out this often; a connection that has not answered the previous one is dropped. Default 15 s. */
  readonly heartbeatMs?: number;
  /**
   * Received bytes waiting to be applied beyond which the socket stops reading, so a fast
   * cache-store cannot fill memory faster than the replicas take it. Default 96 MiB (two of the
   * largest frames).
   */
  readonly maxQueuedBytes?: number;
  /** Most VMs taken from one cache-store's list (each becomes a replica directory). Default 1024. */
  readonly maxVms?: number;
}

/** The defaults of {@link PullerOptions}' limits and timings. */
export const DEFAULT_PULLER = {
  connectTimeoutMs: 10_000,
  heartbeatMs: 15_000,
  maxQueuedBytes: 96 * 1024 * 1024,
  maxVms: 1024,
} as const;
