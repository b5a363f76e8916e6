import { RecordKind, type ChangeRecord } from '@site-recovery/shared';
import type { BlockBackend } from '@site-recovery/shared/nbd';

/** Applies one change record to a backend, exactly as the capture path applied it to the source. */
export async function applyRecord(target: BlockBackend, r: ChangeRecord): Promise<void> {
  switch (r.kind) {
    case RecordKind.WRITE:
      await target.write(r.offset, r.data!, false);
      return;
    case RecordKind.ZERO:
      await target.zero(r.offset, r.length, false, true);
      return;
    case RecordKind.TRIM:
      await target.trim(r.offset, r.length, false);
      return;
    default:
      return; // markers (progress, app-consistent, group): no data
  }
}
