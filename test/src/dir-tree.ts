import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';

/** Every file and directory under `root`, relative, directories with a trailing "/", sorted. */
export async function listTree(root: string, ignore: (name: string) => boolean = () => false): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const entries = await fsp
      .readdir(path.join(root, rel), { withFileTypes: true })
      .catch((err: NodeJS.ErrnoException) => {
        // A directory removed between listing its parent and reading it (a retention prune) is simply gone.
        if (err.code === 'ENOENT') return [];
        throw err;
      });
    for (const e of entries) {
      if (ignore(e.name)) continue;
      const p = rel === '' ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) {
        out.push(`${p}/`);
        await walk(p);
      } else out.push(p);
    }
  };
  await walk('');
  return out.sort();
}

/**
 * Every file under `root` with the SHA-256 of its bytes (directories map to "dir"), keyed like
 * {@link listTree}: two calls compare equal exactly when nothing under `root` changed byte for byte.
 */
export async function digestTree(
  root: string,
  ignore: (name: string) => boolean = () => false,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const rel of await listTree(root, ignore)) {
    if (rel.endsWith('/')) {
      out[rel] = 'dir';
      continue;
    }
    const data = await fsp.readFile(path.join(root, rel)).catch((err: NodeJS.ErrnoException) => {
      // Gone between listing and reading: a file replaced atomically, which the caller should ignore.
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    out[rel] = data === undefined ? 'gone' : createHash('sha256').update(data).digest('hex');
  }
  return out;
}
