export { ErrorCode, SrError, isSrError, systemErrorCode } from './errors.js';
export { ID_PATTERN, checkId } from './ids.js';
export {
  RecordKind,
  isRecordKind,
  recordKindName,
  isGroupKind,
  isMarkerKind,
  MAX_GROUP_RECORD_BYTES,
} from './change-record.js';
export {
  GroupMarkSchema,
  GroupCommitSchema,
  GroupAbortSchema,
  ROUND_PATTERN,
  encodeGroupRecord,
  decodeGroupRecord,
} from './group-record.js';
export type { GroupMark, GroupCommit, GroupAbort, GroupRecord } from './group-record.js';
export type { ChangeRecord } from './change-record.js';
export { createLogger } from './logger.js';
export type { Logger } from './logger.js';
export { crc32c } from './checksum.js';
export { BLOCK_SUM_ALGO, BLOCK_SUM_BYTES, blockSums, zeroBlockSum } from './block-sums.js';
export { pwrite, pwritev, pwriteSync, pwritevSync, pread, preadInto, fdatasync, fsyncFd, closeFd } from './fs-io.js';
export { writeFileAtomic, fsyncDir, isWriteTempName, readJsonIfExists } from './atomic-file.js';
export { RECORD_MAGIC, RECORD_CANONICAL_BYTES, recordChecksum, writeCanonical } from './record-checksum.js';
export type { RecordFields } from './record-checksum.js';
export * from './wire/index.js';
export { parseDuration, formatDuration } from './duration.js';
export { SIZE_HINT, formatSize, parseSize, sizeOption } from './size.js';
export { intOption, parseHostPort, runCli, stopOnSignals } from './cli-runtime.js';
export { Backoff, DEFAULT_BACKOFF } from './backoff.js';
export type { BackoffOptions } from './backoff.js';
export { DIRECT_IO_ALIGNMENT, allocAligned, isPageAligned, alignUp, openDirect } from './direct-io.js';
export { SerialQueue, KeyedSerialQueue } from './serial-queue.js';
export { lsnFileName, parseLsnFileName } from './lsn-file-name.js';
export * from './http/index.js';
export * from './auth/index.js';
