import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '@site-recovery/test';
import { diskChange, diskFacts, type DiskFacts } from '../../src/generation/disk-identity.js';

let t: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  t = await tempDir('disk-identity');
});
afterAll(() => t.cleanup());

const facts = (id: string, size: number, ino: string, birth?: string, mtime = '5'): DiskFacts => ({
  id,
  size,
  identity: { ino, ...(birth !== undefined ? { birthtimeNs: birth } : {}) },
  stamp: { size, mtimeNs: mtime },
});

describe('diskChange', () => {
  const os = facts('os', 100, '7', '1000');
  it.each([
    ['the same disks', [os], [os], undefined, undefined],
    ['another disk added', [os], [os, facts('data', 10, '8')], undefined, 'disk-layout-changed'],
    ['disks reordered', [os, facts('data', 10, '8')], [facts('data', 10, '8'), os], undefined, 'disk-layout-changed'],
    ['another inode', [os], [facts('os', 100, '9', '1000')], undefined, 'disk-replaced'],
    ['the same inode born again', [os], [facts('os', 100, '7', '2000')], undefined, 'disk-replaced'],
    ['a birth time on one side only', [os], [facts('os', 100, '7')], undefined, undefined],
    ['replaced and resized: replaced wins', [os], [facts('os', 200, '9', '3000')], undefined, 'disk-replaced'],
    ['resized', [os], [facts('os', 200, '7', '1000')], undefined, 'disk-resized'],
    ['written while stopped', [os], [os], [{ size: 100, mtimeNs: '4' }], 'disk-modified'],
    ['as the clean stop left it', [os], [os], [{ size: 100, mtimeNs: '5' }], undefined],
  ] as const)('%s', (_, recorded, now, stopped, cause) => {
    expect(diskChange(recorded, now, stopped)?.cause).toBe(cause);
  });

  it('a data dir from before identities were recorded compares sizes only', () => {
    expect(diskChange([{ id: 'os', size: 100 }], [facts('os', 100, '9', '9')], undefined)).toBeUndefined();
  });
});

describe('diskFacts', () => {
  it('tells a file deleted and created again from the one before, even when its inode number comes back', async () => {
    const file = path.join(t.dir, 'disk.img');
    await fsp.writeFile(file, Buffer.alloc(4096));
    const before = await diskFacts('os', file);
    await fsp.rm(file);
    await fsp.writeFile(file, Buffer.alloc(4096));
    // Its times set back a minute, so the write below moves them whatever the clock's granularity.
    const past = new Date(Date.now() - 60_000);
    await fsp.utimes(file, past, past);
    const after = await diskFacts('os', file);
    expect(diskChange([{ id: 'os', size: 4096, identity: before.identity }], [after], undefined)?.cause).toBe(
      'disk-replaced',
    );
    // The same file written in place keeps its identity; its modification time moves.
    const fh = await fsp.open(file, 'r+');
    await fh.write(Buffer.from([1]), 0, 1, 0);
    await fh.close();
    const written = await diskFacts('os', file);
    expect(written.identity).toEqual(after.identity);
    expect(diskChange([{ id: 'os', size: 4096, identity: after.identity }], [written], [after.stamp])?.cause).toBe(
      'disk-modified',
    );
  });
});
