import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** A fresh directory under the system temp dir; removed by `cleanup()`. */
export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `sr-${prefix}-`));
  return { dir, cleanup: () => fsp.rm(dir, { recursive: true, force: true }) };
}

/** A sparse image of `size` bytes, optionally with random data at the given extents. */
export async function makeImage(
  file: string,
  size: number,
  extents: readonly { offset: number; length: number }[] = [],
): Promise<void> {
  const fh = await fsp.open(file, 'w');
  try {
    await fh.truncate(size);
    for (const e of extents) await fh.write(randomBytes(e.length), 0, e.length, e.offset);
  } finally {
    await fh.close();
  }
}

export async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 4 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** The offset of the first differing byte of two files, or -1 when they are identical. */
export async function firstDifference(a: string, b: string): Promise<number> {
  const [fa, fb] = await Promise.all([fsp.open(a, 'r'), fsp.open(b, 'r')]);
  try {
    const [sa, sb] = await Promise.all([fa.stat(), fb.stat()]);
    const chunk = 4 << 20;
    const ba = Buffer.alloc(chunk);
    const bb = Buffer.alloc(chunk);
    const n = Math.min(sa.size, sb.size);
    for (let off = 0; off < n; off += chunk) {
      const len = Math.min(chunk, n - off);
      await Promise.all([fa.read(ba, 0, len, off), fb.read(bb, 0, len, off)]);
      if (ba.compare(bb, 0, len, 0, len) !== 0) {
        for (let i = 0; i < len; i++) if (ba[i] !== bb[i]) return off + i;
      }
    }
    return sa.size === sb.size ? -1 : n;
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}
