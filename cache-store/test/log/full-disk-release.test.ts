import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isSrError } from '@site-recovery/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileStreamStore } from '../../src/log/file-stream-store.js';
import type { StreamLog } from '../../src/log/stream-log.js';
import { reserveFile, vmDir } from '../../src/names.js';

/**
 * A disk that fills with frames the processor has not confirmed yet: its confirmations must still be
 * recorded, since they are what frees the segments. A real small tmpfs (the tests run as root), so the
 * kernel answers ENOSPC.
 */
const mountPoint = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-release-'));
let mounted = false;

beforeAll(() => {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint]);
  mounted = true;
});

afterAll(async () => {
  if (mounted) execFileSync('umount', ['-l', mountPoint]);
  await fs.rm(mountPoint, { recursive: true, force: true });
});

const DISKS = [{ id: 'os', size: 1 << 30 }];
const FRAME = 32 * 1024;

/** Appends frames of one record each until the log fails; resolves to the error it failed with. */
async function fillUp(log: StreamLog): Promise<Error> {
  for (;;) {
    const lsn = log.appendedLsn + 1;
    try {
      log.append({ first: lsn, last: lsn, frame: randomBytes(FRAME) });
      if (lsn % 8 === 0) await log.sync();
    } catch (err) {
      return err as Error;
    }
  }
}

describe('a cache-store whose disk is full', () => {
  it('still records the processor’s confirmations, frees their segments, refuses appends until then, and goes on', async () => {
    const dataDir = path.join(mountPoint, 'data');
    const store = await FileStreamStore.open(dataDir, { segmentBytes: 256 * 1024 });
    expect((await fs.stat(reserveFile(dataDir))).size).toBe(1024 * 1024);
    const log = await store.openGeneration('vm1', 'g1', DISKS);

    const full = await fillUp(log);
    expect(isSrError(full, 'SR_NO_SPACE'), full.message).toBe(true);
    const durable = log.durableLsn;
    expect(durable).toBeGreaterThan(16);
    expect(log.stats().failedCode).toBe('SR_NO_SPACE');

    // An agent reconnecting now is refused at its hello: nothing it sent could be stored.
    const refused = await log.resume().catch((err: unknown) => err as Error);
    expect(isSrError(refused, 'SR_NO_SPACE'), String(refused)).toBe(true);
    expect((refused as Error).message).toMatch(/still full .* goes on from LSN \d+ once space returns/);
    expect(log.durableLsn).toBe(durable);

    // The processor confirms most of it: the confirmation is recorded (spending the reserve) and the
    // segments go, so space returns by itself.
    const segments = log.stats().segments;
    await log.release(durable - 4);
    expect(log.appliedLsn).toBe(durable - 4);
    expect(log.stats().segments).toBeLessThan(segments);
    const meta = JSON.parse(await fs.readFile(path.join(vmDir(dataDir, 'vm1'), 'meta.json'), 'utf8')) as {
      appliedLsn: number;
    };
    expect(meta.appliedLsn).toBe(durable - 4);
    expect((await fs.stat(reserveFile(dataDir))).size, 'the reserve is taken again').toBe(1024 * 1024);

    // The next writer goes on from the durable LSN, and everything durable reads back.
    expect(await log.resume()).toBe(durable);
    for (let i = 1; i <= 8; i++) log.append({ first: durable + i, last: durable + i, frame: randomBytes(FRAME) });
    expect(await log.sync()).toBe(durable + 8);
    const read: number[] = [];
    for await (const f of log.read(durable - 3)) read.push(f.first);
    expect(read).toEqual(Array.from({ length: 12 }, (_, i) => durable - 3 + i));
    await store.close();
  });
});
