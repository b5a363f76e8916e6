import type { Logger } from '@site-recovery/shared';
import type { SpaceReserve } from './space-reserve.js';

export interface FileStreamLogOptions {
  /** A segment is closed and a new one begun once it reaches this size. Default 64 MiB. */
  readonly segmentBytes?: number;
  /** Largest frame accepted when reading back (a larger length field is damage). Default 48 MiB. */
  readonly maxFrameBytes?: number;
  /** Consecutive small frames are read back in one read of up to this size. Default 4 MiB. */
  readonly readChunkBytes?: number;
  /** Room held back so that releases can be recorded on a full disk (the store's). Default none. */
  readonly reserve?: SpaceReserve;
  readonly log?: Logger;
}

export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
export const DEFAULT_READ_CHUNK_BYTES = 4 * 1024 * 1024;
