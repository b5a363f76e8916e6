import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ControlApiError, ControlClient } from '../../src/api/control-client.js';
import { deadUrl, rawRequest, startAuthedProcessor, tempDir, type AuthedProcessor } from './security-fixture.js';
import { makePki, type TestPki } from '@site-recovery/test';

// The control API over https with certificates made at run time: the right CA is served, plaintext
// and a certificate from another CA are refused.

let root: { dir: string; cleanup: () => Promise<void> };
let pki: TestPki;
let otherCa: TestPki;
let p: AuthedProcessor | undefined;

beforeAll(async () => {
  root = await tempDir('control-api-tls');
  pki = await makePki(root.dir, 'processor');
  otherCa = await makePki(path.join(root.dir, 'other'), 'stranger');
});
afterEach(async () => {
  await p?.close();
  p = undefined;
});
afterAll(() => root.cleanup());

async function startTls(): Promise<AuthedProcessor> {
  const dir = path.join(root.dir, `case-${Date.now()}`);
  await fsp.mkdir(dir, { recursive: true });
  p = await startAuthedProcessor(dir, await deadUrl(), { tls: { cert: pki.cert, key: pki.key } });
  return p;
}

/** How a call ends: the answer's VM count, or the error's code and message. */
async function outcome(c: ControlClient): Promise<string> {
  try {
    return `ok ${(await c.status()).vms.length}`;
  } catch (err) {
    if (err instanceof ControlApiError) return `${err.exitCode} ${err.code}: ${err.message}`;
    throw err;
  }
}

describe('control API over TLS', () => {
  it('serves https to a client that trusts its CA and proves an operator token', async () => {
    const a = await startTls();
    const client = new ControlClient(`https://127.0.0.1:${a.port}`, { token: a.operator.parsed, ca: pki.ca });
    expect(await outcome(client)).toBe('ok 1');
    // The same https, without the token: TLS is not authentication.
    expect(await outcome(new ControlClient(`https://127.0.0.1:${a.port}`, { ca: pki.ca }))).toMatch(/^2 SR_AUTH/);
  });

  it('refuses plaintext HTTP on the TLS port', async () => {
    const a = await startTls();
    const plain = await rawRequest(a.port, { method: 'GET', path: '/health' }).then(
      (r) => `answered ${r.status}`,
      (err: NodeJS.ErrnoException) => `refused ${err.code ?? err.message}`,
    );
    expect(plain).toMatch(/^refused /);
    const viaClient = await outcome(new ControlClient(`http://127.0.0.1:${a.port}`, { token: a.operator.parsed }));
    expect(viaClient).toMatch(/^1 SR_UNREACHABLE: .*https:\/\//);
  });

  it('refuses a server whose certificate another CA signed, and says to give --tls-ca', async () => {
    const a = await startTls();
    const wrong = await outcome(
      new ControlClient(`https://127.0.0.1:${a.port}`, { token: a.operator.parsed, ca: otherCa.ca }),
    );
    expect(wrong).toMatch(/^1 SR_UNREACHABLE: .*--tls-ca/);
    // Without a CA the system's are used, and none of them signed a certificate made a moment ago.
    const system = await outcome(new ControlClient(`https://127.0.0.1:${a.port}`, { token: a.operator.parsed }));
    expect(system).toMatch(/^1 SR_UNREACHABLE: .*--tls-ca/);
    // Nothing was served to either: the listener still answers the one that verifies.
    expect(
      await rawRequest(a.port, { method: 'GET', path: '/health', https: { ca: pki.ca }, host: `127.0.0.1:${a.port}` }),
    ).toMatchObject({ status: 200, body: { ok: true } });
  });
});
