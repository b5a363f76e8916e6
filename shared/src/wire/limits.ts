/**
 * Limits of the replication protocol, each with its default. A peer that exceeds one gets an error
 * message with a stable code and the connection is closed; nothing of the offending frame is used.
 * Every limit is checked from declared sizes before anything is allocated or decompressed.
 */
export interface WireLimits {
  /** Largest WebSocket message accepted (ws `maxPayload`). Default 48 MiB. */
  readonly maxFrameBytes: number;
  /** Most records in one batch. Default 65 536. */
  readonly maxBatchRecords: number;
  /** Largest uncompressed payload of one batch. Default 40 MiB (one 32 MiB write plus room). */
  readonly maxBatchRawBytes: number;
  /** Largest payload of one record (the NBD maximum). Default 32 MiB. */
  readonly maxRecordBytes: number;
  /** Most disks a VM may declare. Default 64. */
  readonly maxDisks: number;
}

export const DEFAULT_WIRE_LIMITS: WireLimits = {
  maxFrameBytes: 48 * 1024 * 1024,
  maxBatchRecords: 65_536,
  maxBatchRawBytes: 40 * 1024 * 1024,
  maxRecordBytes: 32 * 1024 * 1024,
  maxDisks: 64,
};

/** Protocol version carried in every HELLO; a peer speaking another one is refused. */
export const PROTOCOL_VERSION = 1;
