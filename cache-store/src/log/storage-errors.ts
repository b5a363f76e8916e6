import fs from 'node:fs';
import { ErrorCode, SrError, systemErrorCode } from '@site-recovery/shared';

/** A storage failure as the error a peer is sent: SR_NO_SPACE for a full disk or quota, else SR_IO. */
export function storageError(err: unknown, what: string): SrError {
  if (err instanceof SrError) return err;
  const errno = systemErrorCode(err);
  const code = errno === 'ENOSPC' || errno === 'EDQUOT' ? ErrorCode.NO_SPACE : ErrorCode.IO;
  return new SrError(code, `${what}: ${(err as Error).message}`, { cause: err });
}

/**
 * Refuses (SR_NO_SPACE) while the file system holding `dir` has less than `bytes` free, naming the LSN
 * the stream of `vm` goes on from once it has.
 */
export async function checkRoomFor(dir: string, bytes: number, vm: string, durable: number): Promise<void> {
  const s = await fs.promises.statfs(dir);
  const free = s.bavail * s.bsize;
  if (free >= bytes) return;
  throw new SrError(
    ErrorCode.NO_SPACE,
    `the cache-store's disk is still full (${free} bytes free, a segment needs ${bytes}); the stream of ${vm} ` +
      `goes on from LSN ${durable + 1} once space returns: the processor confirming what it applied frees ` +
      'segments, or free space on that file system',
  );
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
