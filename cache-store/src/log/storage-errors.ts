import fs from 'node:fs';
import { ErrorCode, SrError, systemErrorCode } from '@site-recovery/shared';

/** A storage failure as the error a peer is sent: SR_NO_SPACE for a full disk or quota, else SR_IO. */
export function storageError(err: unknown, what: string): SrError {
  if (err instanceof SrError) return err;
  const errno = systemErrorCode(err);
  const code = errno === 'ENOSPC' || errno === 'EDQUOT' ? ErrorCode.NO_SPACE : ErrorCode.IO;
  return new SrError(code, `${what}: ${(err as Error).message}`, { cause: err });
}

/** Bytes an unprivileged writer may still use on the file system holding `dir`. */
export async function freeBytes(dir: string): Promise<number> {
  const s = await fs.promises.statfs(dir);
  return s.bavail * s.bsize;
}

export function corrupt(message: string): SrError {
  return new SrError(ErrorCode.JOURNAL_CORRUPT, message);
}

export function openFd(file: string, flags: string): Promise<number> {
  return new Promise((resolve, reject) => fs.open(file, flags, 0o644, (err, fd) => (err ? reject(err) : resolve(fd))));
}

export function ftruncateFd(fd: number, length: number): Promise<void> {
  return new Promise((resolve, reject) => fs.ftruncate(fd, length, (err) => (err ? reject(err) : resolve())));
}
