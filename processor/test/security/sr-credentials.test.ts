import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseToken, readSecretFile } from '@site-recovery/shared';
import { run, type RunResult } from '@site-recovery/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from './security-fixture.js';

// `sr secret new` and `sr token issue`, the built CLI as an operator runs it: no processor needed,
// files only their owner can read, never an existing file overwritten.

const SR = fileURLToPath(new URL('../../dist/cli/sr.js', import.meta.url));

let root: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  root = await tempDir('sr-credentials');
});
afterAll(() => root.cleanup());

function sr(...args: string[]): Promise<RunResult> {
  return run(process.execPath, [SR, ...args]);
}

const file = (name: string): string => path.join(root.dir, name);
const modeOf = async (f: string): Promise<number> => (await fsp.stat(f)).mode & 0o777;

function claimsOf(text: string): Record<string, unknown> {
  const p = parseToken(text.trim());
  if (!p.ok) throw new Error(`not a token: ${p.message}`);
  return { ...p.claims };
}

describe('sr secret new', () => {
  it('writes a new secret 0600 with --out, refuses to overwrite it, and prints one without', async () => {
    const out = file('processor.secret');
    const made = await sr('secret', 'new', '--out', out);
    expect(made.code).toBe(0);
    expect(await modeOf(out)).toBe(0o600);
    expect(readSecretFile(out).length).toBeGreaterThanOrEqual(32);
    const first = await fsp.readFile(out, 'utf8');
    const again = await sr('secret', 'new', '--out', out);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/^sr: SR_BAD_OPTION: .*exists/);
    expect(await fsp.readFile(out, 'utf8')).toBe(first);
    const printed = await sr('secret', 'new');
    expect(printed.code).toBe(0);
    expect(printed.stdout.trim()).toMatch(/^[0-9a-f]{64}$/);
    expect(printed.stdout.trim()).not.toBe(first.trim());
  });
});

describe('sr token issue', () => {
  it('issues operator, processor and agent tokens with the expiry and id asked, 90 days by default', async () => {
    const secret = file('issue.secret');
    expect((await sr('secret', 'new', '--out', secret)).code).toBe(0);

    const op = file('operator.token');
    const r = await sr('token', 'issue', '--secret-file', secret, '--role', 'operator', '--out', op);
    expect(r.code).toBe(0);
    expect(await modeOf(op)).toBe(0o600);
    const c = claimsOf(await fsp.readFile(op, 'utf8'));
    expect(c).toMatchObject({ role: 'operator', id: expect.stringMatching(/^tok-[0-9a-f]{16}$/) as string });
    expect(Number(c['expiresAt']) - Number(c['issuedAt'])).toBe(90 * 24 * 3600);
    expect(r.stdout).toContain(String(c['id']));
    expect((await sr('token', 'issue', '--secret-file', secret, '--role', 'operator', '--out', op)).code).toBe(2);

    const agent = await sr(
      'token',
      'issue',
      '--secret-file',
      secret,
      '--vm',
      'web01',
      '--expires',
      '1h',
      '--id',
      'a-1',
    );
    expect(agent.code).toBe(0);
    const a = claimsOf(agent.stdout);
    expect(a).toMatchObject({ id: 'a-1', role: 'agent', vm: 'web01' });
    expect(Number(a['expiresAt']) - Number(a['issuedAt'])).toBe(3600);
    expect(agent.stderr).toContain('a-1');

    const proc = await sr('token', 'issue', '--secret-file', secret, '--role', 'processor');
    expect(claimsOf(proc.stdout)).toMatchObject({ role: 'processor' });
  });

  it('refuses what would make a wrong token, with SR_BAD_OPTION and exit code 2', async () => {
    const secret = file('refuse.secret');
    expect((await sr('secret', 'new', '--out', secret)).code).toBe(0);
    const open = file('open.secret');
    await fsp.writeFile(open, (await fsp.readFile(secret, 'utf8')) + '', { mode: 0o644 });
    await fsp.chmod(open, 0o644);
    const cases: [string[], RegExp][] = [
      [['--secret-file', secret], /--vm NAME, --role processor or --role operator/],
      [['--secret-file', secret, '--role', 'agent'], /--vm NAME/],
      [['--secret-file', secret, '--vm', 'web01', '--role', 'operator'], /does not go with --role operator/],
      [['--secret-file', secret, '--vm', '../etc'], /not a VM name/],
      [['--secret-file', secret, '--role', 'operator', '--id', 'a b'], /--id/],
      [['--secret-file', secret, '--role', 'operator', '--expires', 'soon'], /--expires/],
      [['--secret-file', open, '--role', 'operator'], /chmod 600/],
      [['--secret-file', file('missing.secret'), '--role', 'operator'], /cannot read/],
      [['--role', 'operator'], /--secret-file/],
    ];
    for (const [args, message] of cases) {
      const r = await sr('token', 'issue', ...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(/^sr: SR_BAD_OPTION: /);
      expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stdout, args.join(' ')).toBe('');
    }
  });
});
