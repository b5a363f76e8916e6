import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { applyRecord } from '../../src/backend/apply-record.js';
import { BackendError } from '@site-recovery/shared/nbd';
import { CaptureBackend, LsnSequence, type ImageFailure } from '../../src/backend/capture-filter.js';
import { faultFilter, ioError } from './fault-filter.js';
import { FileBackend } from '../../src/backend/file-backend.js';
import { FileJournal } from '../../src/journal/file-journal.js';

const SIZE = 4 << 20;
const block = (fill: number, n = 64 * 1024): Buffer => Buffer.alloc(n, fill);

// A journaled write whose image write fails would otherwise reach the replica but not the source:
// the replica would stop being the source after an LSN prefix (invariant 1).
describe('an image write that fails after its record was journaled', () => {
  let dir: string;
  let image: string;
  let journal: FileJournal;
  let file: FileBackend;

  beforeEach(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'sr-imgfail-'));
    image = path.join(dir, 'os.img');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, SIZE);
    journal = await FileJournal.open(path.join(dir, 'journal'));
    file = FileBackend.open(image);
  });
  afterEach(async () => {
    await journal.close().catch(() => undefined);
    await file.close().catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  });

  /** Replays the journal after `checkpoint` onto the image, as a restart of the agent does. */
  async function replayAfter(checkpoint: number): Promise<void> {
    for await (const r of journal.read(checkpoint + 1)) await applyRecord(file, r);
  }

  it('is retried, and a transient failure costs the VM nothing', async () => {
    let failures = 2;
    const capture = new CaptureBackend(
      faultFilter((op) => (op === 'write' && failures-- > 0 ? ioError('EIO') : undefined))(file),
      {
        disk: 0,
        lsns: new LsnSequence(0),
        journal,
        imageRetryDelaysMs: [1, 1, 1],
      },
    );
    await capture.write(65536, block(0xa1), false);
    expect(capture.failure()).toBeUndefined();
    expect((await file.read(65536, 65536)).equals(block(0xa1))).toBe(true);
    expect(capture.oldestPending()).toBe(Infinity);
  });

  it('fails the disk for writes, holds the checkpoint below it, and a replay after restart repairs the image', async () => {
    const lsns = new LsnSequence(0);
    const failed: ImageFailure[] = [];
    const badRange = (offset: number): boolean => offset >= 1 << 20 && offset < 2 << 20;
    const capture = new CaptureBackend(
      faultFilter((op, offset) => (op === 'write' && badRange(offset) ? ioError('EIO') : undefined))(file),
      {
        disk: 0,
        lsns,
        journal,
        imageRetryDelaysMs: [1, 1],
        onImageFailure: (f) => failed.push(f),
      },
    );
    await capture.write(0, block(0x11), false); // LSN 1 lands
    await expect(capture.write(1 << 20, block(0x22), false)).rejects.toMatchObject({ code: 'EIO' }); // LSN 2 journaled only
    expect(capture.failure()).toMatchObject({ lsn: 2 });
    expect(failed).toHaveLength(1);

    // Later writes are refused before they get an LSN or reach the journal or the image.
    const refused = await capture.write(0, block(0x33), false).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(BackendError);
    expect((refused as BackendError).errno).toBe(5); // EIO on the wire
    await expect(capture.zero(0, 4096, false, true)).rejects.toBeInstanceOf(BackendError);
    // Nor does the initial copy read the stale image into the stream.
    await expect(capture.copyChunk(1)).rejects.toBeInstanceOf(BackendError);
    expect(lsns.current).toBe(2);
    expect(journal.lastLsn).toBe(2);
    expect((await file.read(0, 65536)).equals(block(0x11))).toBe(true);

    // The agent's checkpoint is min(oldestPending - 1): it must not pass the failed record.
    expect(capture.oldestPending()).toBe(2);
    await journal.sync();
    await replayAfter(capture.oldestPending() - 1);
    expect((await file.read(1 << 20, 65536)).equals(block(0x22))).toBe(true);
    expect((await file.read(0, 65536)).equals(block(0x11))).toBe(true);
  });
});
