import { ErrorCode, SrError, closeFd, pread, systemErrorCode } from '@site-recovery/shared';
import type { Segment } from './segment.js';
import { decodeFrame } from './segment-format.js';
import { corrupt, openFd, storageError } from './storage-errors.js';
import type { StoredFrame } from './stream-log.js';

/**
 * Yields the durable frames of one segment from the one holding `from`, re-checking each frame's
 * checksum on the way out. Consecutive frames are read together up to `chunkBytes`, so a backlog of
 * small batches costs few reads. The reader opens the file itself: a release that deletes the
 * segment meanwhile cannot pull a descriptor from under it.
 */
export async function* readSegmentFrames(
  seg: Segment,
  from: number,
  durableLsn: () => number,
  chunkBytes: number,
  maxFrameBytes: number,
): AsyncGenerator<StoredFrame> {
  let i = seg.find(from);
  if (i >= seg.frames || seg.frame(i).last > durableLsn()) return;
  let fd: number;
  try {
    fd = await openFd(seg.file, 'r');
  } catch (err) {
    if (systemErrorCode(err) === 'ENOENT')
      throw new SrError(ErrorCode.SEQUENCE, `records from LSN ${from} were released while being read`);
    throw storageError(err, `cannot open ${seg.file}`);
  }
  try {
    while (i < seg.frames) {
      const start = seg.frame(i);
      if (start.last > durableLsn()) return;
      let end = i + 1;
      let bytes = start.bytes;
      for (; end < seg.frames; end++) {
        const loc = seg.frame(end);
        if (loc.last > durableLsn() || bytes + loc.bytes > chunkBytes) break;
        bytes += loc.bytes;
      }
      let buf: Buffer;
      try {
        buf = await pread(fd, bytes, start.offset);
      } catch (err) {
        throw storageError(err, `cannot read ${seg.file}`);
      }
      let at = 0;
      for (let k = i; k < end; k++) {
        const loc = seg.frame(k);
        const f = decodeFrame(buf, at, maxFrameBytes);
        if (!f.ok || f.first !== loc.first || f.first + f.count - 1 !== loc.last) {
          throw corrupt(
            `${seg.file} at byte ${loc.offset}: ${!f.ok ? (f.reason === 'short' ? 'truncated frame' : f.detail) : 'frame does not match the index'}`,
          );
        }
        yield { first: loc.first, last: loc.last, frame: f.frame };
        at += f.bytes;
      }
      i = end;
    }
  } finally {
    await closeFd(fd);
  }
}
