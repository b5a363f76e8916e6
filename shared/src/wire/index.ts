export * from './messages.js';
export { encodeMessage, decodeMessage } from './codec.js';
export { BatchScratch, encodeBatch, decodeBatch, checkBatchShape, lastLsn, RECORD_ENTRY_BYTES } from './batch.js';
export type { BatchHeader } from './batch.js';
export { DEFAULT_WIRE_LIMITS, PROTOCOL_VERSION } from './limits.js';
export type { WireLimits } from './limits.js';
