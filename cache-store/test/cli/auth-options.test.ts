import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { newSecretText, type ParsedToken } from '@site-recovery/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentHello, eventually } from '../helpers.js';
import { Refused, mint, openPeer, proofFor, refusal, request } from '../net/auth-fixture.js';
import { makePki, type TestPki } from '@site-recovery/test';

/** The built CLI (`npx tsc -b` first). */
const CLI = fileURLToPath(new URL('../../dist/cli/sr-cache-store.js', import.meta.url));
const root = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-cli-auth-'));
const children: ChildProcess[] = [];
let pki: TestPki;
beforeAll(async () => {
  pki = await makePki(root, 'cli');
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await fs.rm(root, { recursive: true, force: true });
});

interface Run {
  readonly child: ChildProcess;
  out(): string;
  err(): string;
  readonly exited: Promise<number | null>;
}

function run(args: string[]): Run {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, out: () => out, err: () => err, exited };
}

async function ready(r: Run): Promise<{ listen: string; authentication: boolean; tls: boolean }> {
  let line: string | undefined;
  await eventually(
    () => {
      if (r.child.exitCode !== null) throw new Error(`exited ${r.child.exitCode}: ${r.err()}`);
      line = r
        .out()
        .split('\n')
        .find((l) => l.includes('"ready"'));
      return line !== undefined;
    },
    30_000,
    'the ready line',
  );
  return JSON.parse(line!) as { listen: string; authentication: boolean; tls: boolean };
}

let n = 0;
const dataDir = (): string => path.join(root, `data-${++n}`);

async function secretFile(mode = 0o600): Promise<{ file: string; secret: Buffer }> {
  const file = path.join(root, `secret-${++n}`);
  const text = newSecretText();
  await fs.writeFile(file, text + '\n', { mode });
  await fs.chmod(file, mode);
  return { file, secret: Buffer.from(text, 'hex') };
}

async function refusedToStart(args: string[], message: RegExp): Promise<void> {
  const dir = dataDir();
  const r = run(['--data-dir', dir, ...args]);
  expect(await r.exited).toBe(2);
  expect(r.err()).toMatch(/^sr-cache-store: SR_BAD_OPTION: /);
  expect(r.err()).toMatch(message);
  // Refused before anything was opened.
  await expect(fs.stat(dir)).rejects.toMatchObject({ code: 'ENOENT' });
}

describe('sr-cache-store credentials on the command line', () => {
  it('refuses to start without a secret, saying how to make one; --insecure only on loopback', async () => {
    await refusedToStart(['--listen', '127.0.0.1:0'], /--auth-secret-file FILE.*sr secret new --out FILE.*--insecure/);
    await refusedToStart(
      ['--listen', '0.0.0.0:0', '--insecure'],
      /--insecure listens on loopback only, not 0\.0\.0\.0/,
    );
    await refusedToStart(
      ['--listen', '127.0.0.1:0', '--insecure', '--revoked-tokens-file', path.join(root, 'x')],
      /--revoked-tokens-file needs --auth-secret-file/,
    );
    const readable = await secretFile(0o644);
    await refusedToStart(['--listen', '127.0.0.1:0', '--auth-secret-file', readable.file], /chmod 600/);
    await refusedToStart(
      ['--listen', '127.0.0.1:0', '--insecure', '--tls-cert', pki.certFile],
      /--tls-cert and --tls-key go together/,
    );
  });

  it('--insecure on loopback starts without authentication and says so in its log', async () => {
    const r = run(['--listen', '127.0.0.1:0', '--data-dir', dataDir(), '--insecure']);
    const { listen, authentication } = await ready(r);
    expect(authentication).toBe(false);
    expect(r.err()).toMatch(/"level":40.*authentication is OFF \(--insecure\)/);
    const peer = await openPeer(`ws://${listen}/`);
    peer.send(agentHello('vm1', 'g1'));
    await peer.expect('welcome');
    peer.close();
    r.child.kill('SIGTERM');
    expect(await r.exited).toBe(0);
  });

  it('with a secret, TLS and a revocation file: tokens checked, plaintext refused, revocation read while running', async () => {
    const { file, secret } = await secretFile();
    const revoked = path.join(root, 'revoked');
    await fs.writeFile(revoked, '');
    const r = run([
      ...['--listen', '127.0.0.1:0', '--data-dir', dataDir(), '--auth-secret-file', file],
      ...['--revoked-tokens-file', revoked, '--tls-cert', pki.certFile, '--tls-key', pki.keyFile],
    ]);
    const { listen, authentication, tls } = await ready(r);
    expect({ authentication, tls }).toEqual({ authentication: true, tls: true });
    const url = `wss://${listen}/`;
    const base = `https://${listen}`;
    const agentToken: ParsedToken = mint(secret, { role: 'agent', vm: 'vm1', id: 'vm1-key' });

    expect(await refusal(url, { ca: pki.ca })).toMatchObject({ status: 401, body: { code: 'SR_AUTH' } });
    const peer = await openPeer(url, { headers: proofFor(agentToken, url), ca: pki.ca });
    peer.send(agentHello('vm1', 'g1'));
    await peer.expect('welcome');
    await expect(openPeer(`ws://${listen}/`, { headers: proofFor(agentToken, `ws://${listen}/`) })).rejects.toThrow(
      /socket hang up|ECONNRESET/,
    );

    expect(await request(base, '/health', { ca: pki.ca })).toEqual({ status: 200, body: { ok: true } });
    expect(await request(base, '/status', { ca: pki.ca })).toMatchObject({ status: 401 });
    const processorToken = mint(secret, { role: 'processor' });
    expect(await request(base, '/status', { ca: pki.ca, token: processorToken })).toMatchObject({
      status: 200,
      body: { vms: [{ vm: 'vm1', agentConnected: true }] },
    });

    await fs.writeFile(revoked, 'vm1-key\n');
    await eventually(
      async () => {
        const got = await openPeer(url, { headers: proofFor(agentToken, url), ca: pki.ca }).then(
          (p) => (p.close(), undefined),
          (e: unknown) => e,
        );
        return got instanceof Refused && /revoked/.test(got.body.message ?? '');
      },
      15_000,
      'the revoked token refused',
    );
    // Neither the secret nor a token's MAC reaches the log.
    expect(r.err()).not.toContain(secret.toString('hex'));
    expect(r.err()).not.toContain(agentToken.mac.toString('base64url'));
    r.child.kill('SIGTERM');
    expect(await r.exited).toBe(0);
  });

  it('--help names the credential and TLS options', async () => {
    const help = run(['--help']);
    expect(await help.exited).toBe(0);
    for (const flag of [
      '--auth-secret-file',
      '--revoked-tokens-file',
      '--tls-cert',
      '--tls-key',
      '--insecure',
      '--max-connections-per-source',
      '--max-hello-bytes',
    ])
      expect(help.out()).toContain(flag);
  });
});
