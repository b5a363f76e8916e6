import fs from 'node:fs/promises';
import path from 'node:path';

let tmpSeq = 0;
/** writeFileAtomic's temporary sibling, `<target>.tmp-<pid>-<n>` (before 2026-11-28: `<target>.tmp-<pid>`). */
const TEMP_RE = /\.tmp-\d+(-\d+)?$/;

/** True for a temporary file writeFileAtomic was writing (a leftover when no write is running). */
export function isWriteTempName(name: string): boolean {
  return TEMP_RE.test(name);
}

/**
 * The one crash-safe way this project replaces a small file: write a temporary sibling, fsync it,
 * rename it over the target, fsync the directory. A crash leaves either the old or the new content.
 * Each call has its own temporary file, so two calls at once cannot tear each other's; which one
 * lands last is the caller's to order.
 */
export async function writeFileAtomic(target: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${target}.tmp-${process.pid}-${++tmpSeq}`;
  const fh = await fs.open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close();
    // On a full disk each failed attempt would otherwise leave its partial copy taking space.
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await fs.rename(tmp, target);
  await fsyncDir(path.dirname(target));
}

/** Makes a directory entry change (create, rename, unlink) durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Reads a JSON file; `undefined` if it does not exist. */
export async function readJsonIfExists(file: string): Promise<unknown> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as unknown;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
