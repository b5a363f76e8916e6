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
