export { ErrorCode, SrError, isSrError, systemErrorCode } from './errors.js';
export { ID_PATTERN, checkId } from './ids.js';
export { RecordKind, recordKindName } from './change-record.js';
export type { ChangeRecord } from './change-record.js';
export { createLogger } from './logger.js';
export type { Logger } from './logger.js';
export { crc32c } from './checksum.js';
export { pwrite, pwritev, pwriteSync, pwritevSync, pread, fdatasync, fsyncFd, closeFd } from './fs-io.js';
export { writeFileAtomic, fsyncDir, readJsonIfExists } from './atomic-file.js';
