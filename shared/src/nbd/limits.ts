/** Every limit the NBD server enforces, with its default. Enforced while reading, before allocation. */
export interface NbdServerLimits {
  /** Largest READ or WRITE payload, advertised as the maximum block size. Default 32 MiB. */
  readonly maxPayloadBytes: number;
  /** Largest option payload accepted during the handshake; bigger ones close the connection. Default 64 KiB. */
  readonly maxOptionBytes: number;
  /** Options accepted in one handshake before the connection is closed. Default 1024. */
  readonly maxOptions: number;
  /** Time allowed to finish the handshake. Default 30 s. */
  readonly handshakeTimeoutMs: number;
  /** Requests executing at once per connection; reading from the socket pauses beyond it. Default 128. */
  readonly maxInFlightRequests: number;
  /** WRITE payload and READ reply bytes executing at once per connection; reading pauses beyond it. Default 128 MiB. */
  readonly maxInFlightBytes: number;
  /**
   * Client connections open at once, handshaking or transmitting. One more is closed as soon as it is
   * accepted, before the greeting, logged and counted ({@link NbdServer.refusedConnections}): each
   * connection may pin `maxInFlightBytes`, so this bounds what clients together can make the server
   * hold. A VM needs one per disk (a few more for multi-connection clients such as nbdcopy). Default 128.
   */
  readonly maxConnections: number;
}

export const DEFAULT_NBD_LIMITS: NbdServerLimits = {
  maxPayloadBytes: 32 * 1024 * 1024,
  maxOptionBytes: 64 * 1024,
  maxOptions: 1024,
  handshakeTimeoutMs: 30_000,
  maxInFlightRequests: 128,
  maxInFlightBytes: 128 * 1024 * 1024,
  maxConnections: 128,
};
