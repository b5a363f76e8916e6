import { RecordKind, type ChangeRecord } from '@site-recovery/shared';

/**
 * A WRITE of `size` bytes that says which LSN it is: every payload byte is the LSN (mod 256) and its
 * offset is LSN pages in, so a record read back in another's place shows.
 */
export function lsnWrite(lsn: number, size = 4096): ChangeRecord {
  return {
    lsn,
    kind: RecordKind.WRITE,
    disk: 0,
    offset: lsn * 4096,
    length: size,
    data: Buffer.alloc(size, lsn & 0xff),
  };
}
