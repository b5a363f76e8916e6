import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_CLI, makeImage, nodeFlagsOf, run, tempDir, type RunResult } from '@site-recovery/test';
import { writeSecret, writeToken } from '../security/credentials.js';

let t: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  t = await tempDir('watch-cli');
  await makeImage(path.join(t.dir, 'd0.img'), 4 << 20);
});
afterAll(() => t.cleanup());

const dataDir = (): string => path.join(t.dir, 'data');

const runAgent = (args: string[]): Promise<RunResult> =>
  run(process.execPath, [
    ...nodeFlagsOf(AGENT_CLI),
    AGENT_CLI,
    '--vm',
    'w1',
    '--disk',
    `d0=${path.join(t.dir, 'd0.img')}`,
    '--data-dir',
    dataDir(),
    ...args,
  ]);

// A command line meant for the other mode fails at once, naming the option, before anything is created.
describe('sr-agent --mode', () => {
  it.each([
    [
      ['--mode', 'watch', '--nbd', '127.0.0.1:0', '--insecure', '--cache-store', 'ws://127.0.0.1:1'],
      /--nbd has no use with --mode watch/,
    ],
    [
      ['--mode', 'watch', '--group', 'g', '--insecure', '--cache-store', 'ws://127.0.0.1:1'],
      /--group has no use with --mode watch/,
    ],
    [
      ['--mode', 'watch', '--pre-snapshot', 'true', '--insecure', '--cache-store', 'ws://127.0.0.1:1'],
      /--pre-snapshot has no use/,
    ],
    [['--mode', 'watch'], /--mode watch replicates: add --cache-store URL/],
    [['--watch-debounce', '2s'], /--watch-debounce needs --mode watch/],
    [['--mode', 'mirror'], /--mode "mirror" is not a mode: write nbd or watch/],
    [
      ['--mode', 'watch', '--watch-block-size', '48K', '--insecure', '--cache-store', 'ws://127.0.0.1:1'],
      /watch block size 49152 must be a power of two/,
    ],
    [
      ['--mode', 'watch', '--watch-block-size', '2M', '--insecure', '--cache-store', 'ws://127.0.0.1:1'],
      /--watch-block-size "2M" is too large/,
    ],
  ])('refuses %j with SR_BAD_OPTION', async (args, message) => {
    const r = await runAgent(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^sr-agent: SR_BAD_OPTION: /);
    expect(r.stderr).toMatch(message);
    expect(await fsp.stat(dataDir()).catch(() => undefined)).toBeUndefined();
  });
});

describe('sr-agent --mode watch and its token', () => {
  it('refuses a token of another VM before creating anything, as a fronting agent does', async () => {
    const { secret } = await writeSecret(t.dir);
    const token = await writeToken(t.dir, secret, { id: 'tok-other', role: 'agent', vm: 'someone-else' });
    const r = await runAgent(['--mode', 'watch', '--cache-store', 'ws://127.0.0.1:9', '--token-file', token.file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/SR_BAD_OPTION: the token tok-other is for VM someone-else, not for VM w1/);
    expect(await fsp.stat(dataDir()).catch(() => undefined)).toBeUndefined();
  });
});
