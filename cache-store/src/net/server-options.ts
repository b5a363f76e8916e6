import type { Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { ServerOptions as TlsServerOptions } from 'node:https';
import { DEFAULT_WIRE_LIMITS, type Logger, type TokenVerifier, type WireLimits } from '@site-recovery/shared';
import type { StreamStore } from '../log/stream-log.js';

/** Limits of the cache-store's connections, each with its default. */
export interface CacheStoreLimits extends WireLimits {
  /**
   * A processor connection stops taking batches from the store while more than this many bytes
   * wait in its send buffer, and goes on as it drains. Default 64 MiB.
   */
  readonly maxBufferedBytes: number;
  /**
   * An agent connection stops being read while its VM has more than this many bytes appended but
   * not yet durable, and is read again once half of that is left. Default 256 MiB.
   */
  readonly maxUnsyncedBytes: number;
  /** A connection that has not sent its hello within this time is closed. Default 30 s. */
  readonly helloTimeoutMs: number;
  /** Every connection is pinged this often and dropped when a ping goes unanswered; 0: never. Default 30 s. */
  readonly pingIntervalMs: number;
  /**
   * Open WebSocket connections at most (agents and processors together); one more is closed at once
   * with 1013 (try again later), which agents and processors meet with their reconnect backoff.
   * Default 4096.
   */
  readonly maxConnections: number;
  /**
   * VMs the cache-store tracks at once: every VM with a stored stream, plus every VM named by a
   * connected agent or a processor's subscription that has none yet. VM names come from peers, so
   * this bounds the memory (and directories) they can make the cache-store hold; a VM nothing holds
   * any more is forgotten. A new VM past it is refused with SR_LIMIT (error message, then close
   * 1008) and nothing is stored for it; VMs already stored are always served. Default 1024 (the
   * processor's own default).
   */
  readonly maxVms: number;
  /**
   * Open TCP connections (WebSocket and HTTP) from one source address, counted as they are
   * accepted, before TLS or any credential; one more is closed at once, and counted in
   * `GET /status` (`refusedConnections`). Every agent on a hypervisor host shares its address, so
   * this is not one: it keeps a single address from holding all of `maxConnections`. Default 256.
   */
  readonly maxConnectionsPerSource: number;
  /**
   * Bytes a connection may send before its hello has arrived (frame headers included); past it the
   * connection gets SR_LIMIT and is closed before the rest is read. A hello is a few kilobytes (64
   * disks of 64-character ids), so a peer cannot make the cache-store buffer a `maxFrameBytes`
   * message before saying who it is. Default 64 KiB.
   */
  readonly maxHelloBytes: number;
  /**
   * How often open connections are checked against their credential: one whose token has expired or
   * been revoked since its upgrade is closed (1008, SR_AUTH) and logged. The revoked-tokens file is
   * read again within a second of a change, so a revocation ends its sessions within about two of
   * these. Default 1 s.
   */
  readonly credentialCheckMs: number;
}

export const DEFAULT_CACHE_STORE_LIMITS: CacheStoreLimits = {
  ...DEFAULT_WIRE_LIMITS,
  maxBufferedBytes: 64 * 1024 * 1024,
  maxUnsyncedBytes: 256 * 1024 * 1024,
  helloTimeoutMs: 30_000,
  pingIntervalMs: 30_000,
  maxConnections: 4096,
  maxVms: 1024,
  maxConnectionsPerSource: 256,
  maxHelloBytes: 64 * 1024,
  credentialCheckMs: 1000,
};

export interface CacheStoreServerOptions {
  readonly store: StreamStore;
  readonly log: Logger;
  readonly limits?: Partial<CacheStoreLimits>;
  /** Address to listen on; port 0 picks a free one. */
  readonly host: string;
  readonly port: number;
  /**
   * The server to attach to, not yet listening: an `https.Server` carries the TLS options.
   * Default: a plain `http.Server`.
   */
  readonly server?: HttpServer | HttpsServer;
  /** Serve only HTTPS and WSS with these options (key, cert); not with `server`. */
  readonly tls?: TlsServerOptions;
  /**
   * Checks every WebSocket upgrade (agent and processor tokens, signed with this cache-store's
   * secret) and every HTTP route but the bare `GET /health`. Absent: no authentication, everyone
   * may do everything (what `--insecure` gives; for loopback and tests).
   */
  readonly verifier?: TokenVerifier;
}
