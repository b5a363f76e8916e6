import fsp from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDir } from '@site-recovery/test';
import type { Agent } from '../../src/agent.js';
import { HealthCode } from '../../src/health.js';
import { CMD, openExport, tx, type Raw } from '../nbd/raw-nbd.js';
import { checkpointOnDisk, startInProcess } from '../in-process-agent.js';
import { faultFilter, ioError } from './fault-filter.js';

const EIO = 5;
const KiB64 = 64 * 1024;
const block = (fill: number): Buffer => Buffer.alloc(KiB64, fill);

async function readImage(image: string, offset: number, length: number): Promise<Buffer> {
  const fh = await fsp.open(image, 'r');
  try {
    const b = Buffer.alloc(length);
    await fh.read(b, 0, length, offset);
    return b;
  } finally {
    await fh.close();
  }
}

// After a failed fdatasync the kernel may have dropped the dirty pages and marked them clean, so the
// next fdatasync succeeds without them (PostgreSQL's "fsyncgate"). A checkpoint that trusted it would
// release journal holding the only copy of those writes, and a restart would not replay them.
describe('an image fdatasync that fails', () => {
  let t: { dir: string; cleanup: () => Promise<void> };
  let agent: Agent | undefined;
  let client: Raw | undefined;
  beforeEach(async () => {
    t = await tempDir('imgsync');
  });
  afterEach(async () => {
    client?.close();
    await agent?.close().catch(() => undefined);
    await t.cleanup();
  });

  it('is never forgotten: flushes and writes fail, no checkpoint passes it, and a restart replays the journal', async () => {
    let failNextFlush = false;
    let flushFaults = 0;
    const started = await startInProcess(t.dir, 'syncfail', {
      // Fails one fdatasync only: the one after it would succeed, as on Linux after writeback lost pages.
      imageFilter: faultFilter((op) => {
        if (op !== 'flush' || !failNextFlush) return undefined;
        failNextFlush = false;
        flushFaults++;
        return ioError('EIO');
      }),
    });
    agent = started.agent;
    const { image, dataDir } = started;
    client = await openExport(agent.address.port, 'os');

    expect((await tx(client, CMD.WRITE, 0, 0n, KiB64, block(0xa1))).errno).toBe(0); // LSN 1
    expect(await agent.checkpoint()).toBe(1);

    failNextFlush = true;
    expect((await tx(client, CMD.WRITE, 0, 1n << 20n, KiB64, block(0xb2))).errno).toBe(0); // LSN 2
    expect((await tx(client, CMD.FLUSH, 0, 0n, 0)).errno).toBe(EIO);
    expect(flushFaults).toBe(1);

    // The storage would accept an fdatasync now; it must not be taken to cover LSN 2.
    expect((await tx(client, CMD.FLUSH, 0, 0n, 0)).errno).toBe(EIO);
    expect(await agent.checkpoint()).toBe(1);
    expect(agent.status().checkpointLsn).toBe(1);
    expect(await checkpointOnDisk(dataDir)).toBe(1);

    // Writes are refused before they take an LSN, so nothing more goes into the journal or the image.
    expect((await tx(client, CMD.WRITE, 0, 2n << 20n, KiB64, block(0xc3))).errno).toBe(EIO);
    expect((await tx(client, CMD.WRITE_ZEROES, 0, 0n, 4096)).errno).toBe(EIO);
    const status = agent.status();
    expect(status.lsn).toBe(2);
    expect(status.imageFailures).toEqual([{ disk: 'os', op: 'sync', lsn: 2, error: 'EIO: injected fault' }]);
    const health = agent.health();
    expect(health.ok).toBe(false);
    expect(health.problems.map((p) => p.code)).toEqual([HealthCode.IMAGE_SYNC_FAILED]);
    expect(health.problems[0]!.message).toMatch(/disk os: .*restarted/);

    client.close();
    client = undefined;
    // A clean stop must not write the checkpoint it could not prove either.
    await expect(agent.close()).rejects.toMatchObject({ code: 'SR_IO' });
    agent = undefined;
    expect(await checkpointOnDisk(dataDir)).toBe(1);

    // What the failed fdatasync may have cost: LSN 2's page never reached the disk.
    const fh = await fsp.open(image, 'r+');
    await fh.write(Buffer.alloc(KiB64), 0, KiB64, 1 << 20);
    await fh.close();

    ({ agent } = await startInProcess(t.dir, 'syncfail'));
    expect(agent.status().checkpointLsn).toBe(2);
    expect(agent.health()).toMatchObject({ ok: true, problems: [] });
    expect((await readImage(image, 1 << 20, KiB64)).equals(block(0xb2))).toBe(true);
    expect((await readImage(image, 0, KiB64)).equals(block(0xa1))).toBe(true);
    expect((await readImage(image, 2 << 20, KiB64)).equals(Buffer.alloc(KiB64))).toBe(true);
  });

  it('a clean stop after a failed image write leaves the checkpoint below it, so the restart replays it', async () => {
    let failWrites = true;
    const started = await startInProcess(t.dir, 'writefail', {
      imageFilter: faultFilter((op, offset) =>
        op === 'write' && failWrites && offset === 1 << 20 ? ioError('EIO') : undefined,
      ),
    });
    agent = started.agent;
    const { image, dataDir } = started;
    client = await openExport(agent.address.port, 'os');
    expect((await tx(client, CMD.WRITE, 0, 0n, KiB64, block(0x11))).errno).toBe(0); // LSN 1
    expect((await tx(client, CMD.WRITE, 0, 1n << 20n, KiB64, block(0x22))).errno).toBe(EIO); // LSN 2, journaled only
    expect(agent.status().imageFailures).toMatchObject([{ disk: 'os', op: 'write', lsn: 2 }]);
    expect(agent.health().problems.map((p) => p.code)).toEqual([HealthCode.IMAGE_WRITE_FAILED]);
    client.close();
    client = undefined;
    failWrites = false;
    await agent.close();
    agent = undefined;
    expect(await checkpointOnDisk(dataDir)).toBe(1);

    ({ agent } = await startInProcess(t.dir, 'writefail'));
    expect((await readImage(image, 1 << 20, KiB64)).equals(block(0x22))).toBe(true);
  });
});
