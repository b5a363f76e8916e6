import { ErrorCode, SrError, isSrError, systemErrorCode } from '@site-recovery/shared';
import type { ErrorInfo } from './vm-status.js';

/** A storage failure with a stable code: SR_NO_SPACE for a full disk, SR_IO otherwise. */
export function asStorageError(err: unknown, what: string): SrError {
  if (isSrError(err)) return err;
  const sys = systemErrorCode(err);
  const code = sys === 'ENOSPC' || sys === 'EDQUOT' ? ErrorCode.NO_SPACE : ErrorCode.IO;
  return new SrError(code, `${what}: ${(err as Error).message}`, { cause: err });
}

/** Codes that say local storage failed (rather than what arrived being wrong). */
export function isStorageCode(code: string): boolean {
  return code === ErrorCode.IO || code === ErrorCode.NO_SPACE;
}

/** An error as status and health show it: code, message and when it happened. */
export function errorInfo(err: SrError): ErrorInfo {
  return { code: err.code, message: err.message, at: new Date().toISOString() };
}
