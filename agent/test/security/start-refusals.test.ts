import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_CLI, makeImage, nodeFlagsOf, run, startAgent, tempDir } from '@site-recovery/test';
import { writeSecret, writeToken } from './credentials.js';

// sr-agent refuses, at start and before it creates anything, every setting that would expose the VM's
// disks or leave it replicating without a credential the cache-store can check.

let t: { dir: string; cleanup: () => Promise<void> };
let secret: Buffer;
let image: string;
beforeAll(async () => {
  t = await tempDir('agent-start-refusals');
  ({ secret } = await writeSecret(t.dir));
  image = path.join(t.dir, 'os.img');
  await makeImage(image, 16 << 20);
});
afterAll(() => t.cleanup());

/** Runs sr-agent for VM `vm` to completion; its data dir is `<dir>/<vm>-data`. */
async function refused(vm: string, args: readonly string[]): Promise<{ stderr: string; dataDir: string }> {
  const dataDir = path.join(t.dir, `${vm}-data`);
  const r = await run(
    process.execPath,
    [...nodeFlagsOf(AGENT_CLI), AGENT_CLI, '--vm', vm, '--disk', `os=${image}`, '--data-dir', dataDir, ...args],
    { timeoutMs: 30_000 },
  );
  expect(r.code, `sr-agent exit code; stderr: ${r.stderr}`).toBe(2);
  await expect(fsp.access(dataDir), 'the refused agent created its data dir').rejects.toThrow();
  return { stderr: r.stderr, dataDir };
}

describe('sr-agent refuses to start', () => {
  it('with --cache-store but neither --token-file nor --insecure, and says how to issue a token', async () => {
    const { stderr } = await refused('notoken', ['--cache-store', 'ws://127.0.0.1:9']);
    expect(stderr).toMatch(/^sr-agent: SR_BAD_OPTION: --cache-store needs --token-file FILE/m);
    expect(stderr).toContain('sr token issue --secret-file <cache-store secret> --vm notoken --out FILE');
    expect(stderr).toContain('--insecure');
  });

  it.each([
    ['group', 0o640],
    ['others', 0o604],
  ])('with a token file %s may read, naming the fix', async (_who, mode) => {
    const vm = `readable-${mode.toString(8)}`;
    const token = await writeToken(t.dir, secret, { id: `tok-${vm}`, role: 'agent', vm }, mode);
    const { stderr } = await refused(vm, ['--cache-store', 'ws://127.0.0.1:9', '--token-file', token.file]);
    expect(stderr).toContain(`SR_BAD_OPTION: the token file ${token.file} is readable by others`);
    expect(stderr).toContain(`chmod 600 ${token.file}`);
    // Nothing of the token reaches the output, not even in the refusal.
    expect(stderr).not.toContain(token.text.split('.')[2]);
  });

  it.each([
    ['an agent token of another VM', { role: 'agent', vm: 'someone-else' }, /is for VM someone-else, not for VM mine/],
    ['a processor token', { role: 'processor' }, /is for the processor role, not for VM mine/],
    ['an expired token', { role: 'agent', vm: 'mine', expiresAt: 1_000_000 }, /expired at 1970-/],
  ] as const)('with %s', async (what, claims, message) => {
    const id = `tok-${what.replace(/\W+/g, '-')}`;
    const token = await writeToken(t.dir, secret, { id, ...claims });
    const { stderr } = await refused('mine', ['--cache-store', 'ws://127.0.0.1:9', '--token-file', token.file]);
    expect(stderr).toMatch(/SR_BAD_OPTION: the token tok-/);
    expect(stderr).toMatch(message);
    expect(stderr).toContain('sr token issue --secret-file <cache-store secret> --vm mine');
  });

  it('with --tls-ca for a plaintext ws:// cache-store (it would verify nothing)', async () => {
    const token = await writeToken(t.dir, secret, { id: 'tok-tlsca', role: 'agent', vm: 'tlsca' });
    const { stderr } = await refused('tlsca', [
      '--cache-store',
      'ws://127.0.0.1:9',
      '--token-file',
      token.file,
      '--tls-ca',
      token.file,
    ]);
    expect(stderr).toMatch(
      /SR_BAD_OPTION: --tls-ca verifies a TLS server, but --cache-store ws:\/\/127\.0\.0\.1:9 is plaintext/,
    );
  });

  it('with NBD on a non-loopback address unless --nbd-allow-remote, and the message states the risk', async () => {
    const { stderr } = await refused('nbdremote', ['--nbd', '0.0.0.0:0']);
    expect(stderr).toContain('SR_BAD_OPTION: --nbd 0.0.0.0 is not a loopback address');
    expect(stderr).toContain("anyone who reaches the port reads and writes the VM's disks");
    expect(stderr).toContain('--nbd-allow-remote');

    // With the flag it serves there, and its log repeats the risk.
    const agent = await startAgent({
      vm: 'nbdremote',
      disks: [{ id: 'os', path: image }],
      dataDir: path.join(t.dir, 'nbdremote-data'),
      args: ['--nbd', '0.0.0.0:0', '--nbd-allow-remote'],
    });
    try {
      expect(String(agent.ready['nbd'])).toMatch(/^0\.0\.0\.0:\d+$/);
      expect(agent.stderr()).toContain('NBD listens off loopback (--nbd-allow-remote)');
    } finally {
      expect(await agent.stop()).toBe(0);
    }
  });

  it('with the status listener on a non-loopback address unless --status-allow-remote', async () => {
    const { stderr } = await refused('statusremote', ['--status', '0.0.0.0:0']);
    expect(stderr).toContain('SR_BAD_OPTION: --status 0.0.0.0 is not a loopback address');
    expect(stderr).toContain('replication generation');
    expect(stderr).toContain('--status-allow-remote');
  });
});
