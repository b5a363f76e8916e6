import { ErrorCode, isSrError } from '../index.js';
import { Errno } from './constants.js';

/**
 * Storage behind an NBD export. The protocol layer validates every request (bounds, alignment,
 * flags) before calling in, so an implementation may assume `offset + length <= size` and a
 * non-empty range. Filters wrap a backend and return another (`(next) => backend`), as nbdkit does.
 *
 * Contract:
 * - `write`, `zero` and `trim` resolve once the change is visible to later `read`s; with `fua` they
 *   resolve only once it is also on stable storage.
 * - `flush` resolves once every write-type call that resolved before `flush` was called is on
 *   stable storage. It covers all connections (the backend has no per-connection cache).
 * - Failures reject with a {@link BackendError} carrying the errno to put on the wire.
 * - `write` must not keep a reference to `data` once its promise settles: the NBD layer reuses
 *   that memory for later requests (see PayloadPool).
 */
export interface BlockBackend {
  /** Size in bytes, fixed for the life of the backend. */
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer, fua: boolean): Promise<void>;
  /** After this the range reads back as zeroes. `mayTrim` false means the space must stay allocated. */
  zero(offset: number, length: number, fua: boolean, mayTrim: boolean): Promise<void>;
  /** A hint that the range is unused; contents are unspecified until rewritten. */
  trim(offset: number, length: number, fua: boolean): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

export type BackendFilter = (next: BlockBackend) => BlockBackend;

export class BackendError extends Error {
  readonly errno: Errno;

  constructor(errno: Errno, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BackendError';
    this.errno = errno;
  }
}

/** Maps a failure from local storage to the errno a client can act on. */
export function errnoOf(err: unknown): Errno {
  if (err instanceof BackendError) return err.errno;
  if (isSrError(err, ErrorCode.SHUTTING_DOWN)) return Errno.ESHUTDOWN;
  const code = typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined;
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') return Errno.ENOSPC;
  if (code === 'EROFS' || code === 'EPERM' || code === 'EACCES') return Errno.EPERM;
  return Errno.EIO;
}
