import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, startService, type RunResult, type ServiceProcess } from '@site-recovery/test';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { auditLines, deadUrl, rawRequest, seededReplica, tempDir, waitFor, VM } from './security-fixture.js';
import { makePki, type TestPki } from '@site-recovery/test';

// The built sr-processor and sr as an operator sets them up: secrets and tokens made with
// `sr secret new` / `sr token issue`, the daemon refusing to start open by accident, and `sr`
// presenting its token (and checking the processor's certificate) end to end.

const SR = fileURLToPath(new URL('../../dist/cli/sr.js', import.meta.url));
const PROCESSOR = fileURLToPath(new URL('../../dist/cli/sr-processor.js', import.meta.url));

let root: { dir: string; cleanup: () => Promise<void> };
let pki: TestPki;
/** Credentials made once: the two daemons' secrets and the tokens signed with them. */
const cred = {
  processorSecret: '',
  cacheStoreSecret: '',
  processorToken: '',
  operatorToken: '',
  /** An "operator" token minted with the cache-store's secret. */
  sourceOperatorToken: '',
  agentToken: '',
};
let n = 0;
const running: ServiceProcess[] = [];

function sr(args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  return run(process.execPath, [SR, ...args], { env });
}

async function srOk(args: string[]): Promise<RunResult> {
  const r = await sr(args);
  if (r.code !== 0) throw new Error(`sr ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r;
}

beforeAll(async () => {
  root = await tempDir('sr-processor-auth');
  pki = await makePki(path.join(root.dir, 'pki'), 'processor');
  const f = (name: string): string => path.join(root.dir, name);
  cred.processorSecret = f('processor.secret');
  cred.cacheStoreSecret = f('cache-store.secret');
  await srOk(['secret', 'new', '--out', cred.processorSecret]);
  await srOk(['secret', 'new', '--out', cred.cacheStoreSecret]);
  const issue = async (secret: string, out: string, ...who: string[]): Promise<string> => {
    await srOk(['token', 'issue', '--secret-file', secret, ...who, '--out', f(out)]);
    return f(out);
  };
  cred.processorToken = await issue(cred.cacheStoreSecret, 'processor.token', '--role', 'processor', '--id', 'proc-1');
  cred.operatorToken = await issue(cred.processorSecret, 'operator.token', '--role', 'operator', '--id', 'alice');
  cred.sourceOperatorToken = await issue(cred.cacheStoreSecret, 'source-op.token', '--role', 'operator');
  cred.agentToken = await issue(cred.cacheStoreSecret, 'agent.token', '--vm', VM);
});
afterEach(async () => {
  for (const s of running.splice(0)) await s.stop();
});
afterAll(() => root.cleanup());

/** A fresh data dir holding a replica of VM. */
async function dataDir(): Promise<string> {
  const d = path.join(root.dir, `case-${++n}`);
  await seededReplica(d);
  return d;
}

async function baseArgs(dir: string, listen = '127.0.0.1:0'): Promise<string[]> {
  return ['--listen', listen, '--cache-store', await deadUrl(), '--data-dir', dir];
}

function authArgs(): string[] {
  return ['--auth-secret-file', cred.processorSecret, '--cache-store-token-file', cred.processorToken];
}

async function start(args: string[]): Promise<ServiceProcess> {
  const s = await startService(PROCESSOR, args);
  running.push(s);
  return s;
}

describe('sr-processor refuses to run open by accident', () => {
  it('will not start without credentials, or with --insecure off loopback, saying what to do', async () => {
    const dir = await dataDir();
    const bad = path.join(root.dir, 'readable.secret');
    await fsp.copyFile(cred.processorSecret, bad);
    await fsp.chmod(bad, 0o644);
    const cases: [string[], RegExp][] = [
      [[], /--auth-secret-file FILE \(create one with "sr secret new --out FILE"\).*--insecure/],
      [['--insecure', '--listen', '0.0.0.0:0'], /--insecure listens on loopback only/],
      [['--auth-secret-file', cred.processorSecret], /--cache-store-token-file FILE.*--role processor/],
      [['--auth-secret-file', bad, '--cache-store-token-file', cred.processorToken], /chmod 600/],
      [['--auth-secret-file', cred.processorSecret, '--cache-store-token-file', cred.agentToken], /agent token/],
      [[...authArgs(), '--tls-ca', pki.caFile], /--tls-ca verifies a wss:\/\/ cache-store/],
      [[...authArgs(), '--tls-cert', pki.certFile], /--tls-cert and --tls-key go together/],
      [[...authArgs(), '--allowed-hosts', 'a/b'], /--allowed-hosts entry "a\/b"/],
      [['--insecure', '--revoked-tokens-file', path.join(root.dir, 'r')], /--revoked-tokens-file needs/],
    ];
    for (const [extra, message] of cases) {
      const r = await run(process.execPath, [PROCESSOR, ...(await baseArgs(dir)), ...extra]);
      expect(r.code, extra.join(' ')).toBe(2);
      expect(r.stderr, extra.join(' ')).toMatch(/sr-processor: SR_BAD_OPTION: /);
      expect(r.stderr, extra.join(' ')).toMatch(message);
      expect(r.stdout, extra.join(' ')).not.toContain('"ready"');
    }
  });

  it('with --insecure on loopback, runs without tokens, says so, and still takes JSON only from our Host', async () => {
    const p = await start([...(await baseArgs(await dataDir())), '--insecure']);
    expect(p.ready).toMatchObject({ authentication: false, tls: false });
    expect(p.stderr()).toContain('authentication is off');
    const st = await sr(['status', '--json'], { SR_PROCESSOR_URL: `http://${p.listen}` });
    expect(st.code).toBe(0);
    const port = Number(p.listen.split(':').pop());
    const form = await rawRequest(port, {
      method: 'POST',
      path: `/vms/${VM}/commit`,
      headers: { 'content-type': 'text/plain' },
      body: '{}',
    });
    expect(form.status).toBe(415);
    expect((await rawRequest(port, { method: 'POST', path: `/vms/${VM}/commit` })).status).toBe(415);
    expect((await rawRequest(port, { method: 'GET', path: '/status', host: `evil.example:${port}` })).status).toBe(421);
  });
});

describe('sr with --token-file against an authenticating sr-processor', () => {
  it('is served with an operator token of the processor, refused without one, and audited', async () => {
    const dir = await dataDir();
    const revoked = path.join(root.dir, `revoked-${n}`);
    await fsp.writeFile(revoked, '');
    const p = await start([...(await baseArgs(dir)), ...authArgs(), '--revoked-tokens-file', revoked]);
    expect(p.ready).toMatchObject({ authentication: true });
    const env = { SR_PROCESSOR_URL: `http://${p.listen}` };

    const anon = await sr(['status'], env);
    expect(anon.code).toBe(2);
    expect(anon.stderr).toMatch(/^sr: SR_AUTH: .*--token-file FILE or SR_TOKEN_FILE/);
    const source = await sr(['--token-file', cred.sourceOperatorToken, 'status'], env);
    expect(source.code).toBe(2);
    expect(source.stderr).toMatch(/^sr: SR_AUTH: /);

    expect((await sr(['--token-file', cred.operatorToken, 'status'], env)).code).toBe(0);
    const pts = await sr(['points', VM, '--json'], { ...env, SR_TOKEN_FILE: cred.operatorToken });
    expect(pts.code).toBe(0);
    const listed = JSON.parse(pts.stdout) as { id: string }[];
    expect(listed.every((pt) => pt.id.startsWith('p-'))).toBe(true);
    const conf = await sr(['configure', VM, '--retention', '2d'], { ...env, SR_TOKEN_FILE: cred.operatorToken });
    expect(conf.code, conf.stderr).toBe(0);

    const lines = await auditLines(path.join(dir, 'audit.log'));
    expect(lines.filter((l) => l['action'] === 'authenticate').map((l) => l['code'])).toEqual(['SR_AUTH', 'SR_AUTH']);
    expect(lines.filter((l) => l['action'] !== 'authenticate')).toEqual([
      expect.objectContaining({
        action: 'configure',
        vm: VM,
        callerId: 'alice',
        callerRole: 'operator',
        outcome: 'ok',
      }),
    ]);

    await fsp.writeFile(revoked, 'alice\n');
    await waitFor('sr to be refused once alice is revoked', async () =>
      (await sr(['--token-file', cred.operatorToken, 'status'], env)).code === 2 ? true : undefined,
    );
  });

  it('reaches an https processor with --tls-ca or SR_TLS_CA, and refuses it otherwise', async () => {
    const tls = ['--tls-cert', pki.certFile, '--tls-key', pki.keyFile];
    const p = await start([...(await baseArgs(await dataDir())), ...authArgs(), ...tls]);
    expect(p.ready).toMatchObject({ tls: true, authentication: true });
    const https = `https://127.0.0.1:${p.listen.split(':').pop()}`;
    const token = ['--token-file', cred.operatorToken];
    expect((await sr(['--processor', https, '--tls-ca', pki.caFile, ...token, 'status'])).code).toBe(0);
    expect((await sr(['--processor', https, ...token, 'status'], { SR_TLS_CA: pki.caFile })).code).toBe(0);
    const untrusted = await sr(['--processor', https, ...token, 'status']);
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toMatch(/SR_UNREACHABLE: .*--tls-ca/);
    const plain = await sr(['--processor', `http://${p.listen}`, ...token, 'status']);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/SR_UNREACHABLE: .*https:\/\//);
  });
});
