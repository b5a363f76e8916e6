import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isWriteTempName, writeFileAtomic } from '../src/atomic-file.js';

const root = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-atomic-'));
afterAll(() => fs.rm(root, { recursive: true, force: true }));

describe('writeFileAtomic', () => {
  it('lets several writes of one file run at once: each lands whole, and no temporary file is left', async () => {
    const target = path.join(root, 'state.json');
    const contents = Array.from({ length: 8 }, (_, i) => JSON.stringify({ i, pad: 'x'.repeat(1000 * i) }));
    await Promise.all(contents.map((c) => writeFileAtomic(target, c)));
    expect(contents).toContain(await fs.readFile(target, 'utf8'));
    expect(await fs.readdir(root)).toEqual(['state.json']);
  });

  it('names its temporary files so that cleanup finds them, and nothing else', () => {
    expect(isWriteTempName('state.json.tmp-4242-7')).toBe(true);
    expect(isWriteTempName('state.json.tmp-4242')).toBe(true); // as versions before 2026-11-28 named them
    expect(isWriteTempName('state.json')).toBe(false);
    expect(isWriteTempName('notes.tmp-x')).toBe(false);
  });
});
