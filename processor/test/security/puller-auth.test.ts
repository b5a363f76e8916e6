import fsp from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { WebSocketServer } from 'ws';
import {
  MessageSchema,
  TokenVerifier,
  checkRequest,
  decodeMessage,
  refuseUpgrade,
  type TokenRole,
} from '@site-recovery/shared';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  log,
  startAuthedProcessor,
  tempDir,
  token,
  waitFor,
  writeSecret,
  type AuthedProcessor,
  type TestToken,
} from './security-fixture.js';
import { makePki, type TestPki } from '@site-recovery/test';

// The processor's dial to the cache-store: a fresh proof of its processor token at every upgrade,
// a wss:// certificate checked against --tls-ca, and a refusal kept where status and health show it.
// The cache-store here checks the upgrade as the real one does (shared/auth) and drops the connection
// after the hello, so the processor keeps redialling.

let root: { dir: string; cleanup: () => Promise<void> };
let pki: TestPki;
let otherCa: TestPki;
let csSecret: Buffer;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  root = await tempDir('puller-auth');
  pki = await makePki(path.join(root.dir, 'pki'), 'cache-store');
  otherCa = await makePki(path.join(root.dir, 'other'), 'stranger');
  csSecret = await writeSecret(path.join(root.dir, 'cache-store.secret'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => root.cleanup());

interface CheckingCacheStore {
  readonly url: string;
  /** Upgrades whose proof held. */
  readonly accepted: number;
  readonly refused: string[];
  /** The hello frames received, decoded. */
  readonly hellos: Record<string, unknown>[];
}

/** A wss:// endpoint that checks each upgrade's proof with the cache-store's secret (role processor). */
async function checkingCacheStore(roles: readonly TokenRole[] = ['processor']): Promise<CheckingCacheStore> {
  const verifier = new TokenVerifier({ secret: csSecret, log });
  const server = https.createServer({ cert: pki.cert, key: pki.key });
  const wss = new WebSocketServer({ noServer: true });
  const state = { accepted: 0, refused: [] as string[], hellos: [] as Record<string, unknown>[] };
  server.on('upgrade', (req, socket, head) => {
    const r = checkRequest(verifier, req, roles);
    if (!r.ok) {
      state.refused.push(r.message);
      refuseUpgrade(socket, 401, r.code, r.message);
      return;
    }
    state.accepted++;
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.once('message', (data: Buffer) => {
        state.hellos.push({ ...decodeMessage(data, MessageSchema) });
        ws.close(1000, 'test: redial');
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    verifier.close();
    for (const c of wss.clients) c.terminate();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    url: `wss://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    get accepted() {
      return state.accepted;
    },
    refused: state.refused,
    hellos: state.hellos,
  };
}

async function processorFor(cs: CheckingCacheStore, t: TestToken | undefined, ca: Buffer): Promise<AuthedProcessor> {
  const dir = path.join(root.dir, `case-${Date.now()}-${Math.random().toString(16).slice(2)}`);
  await fsp.mkdir(dir, { recursive: true });
  const p = await startAuthedProcessor(dir, cs.url, {
    cacheStoreCa: ca,
    auth: t !== undefined ? { cacheStoreToken: t.parsed } : {},
  });
  cleanups.push(() => p.close());
  return p;
}

describe('puller authentication', () => {
  it('proves its token afresh at every dial over a verified wss:// link, and sends no credential in the hello', async () => {
    const cs = await checkingCacheStore();
    await processorFor(cs, token(csSecret, 'processor', 'proc-1'), pki.ca);
    // The checker refuses a proof it has seen: three accepted upgrades are three fresh proofs.
    await waitFor('three authenticated dials', () => (cs.accepted >= 3 ? true : undefined));
    expect(cs.refused).toEqual([]);
    await waitFor('a hello', () => (cs.hellos.length > 0 ? true : undefined));
    expect(cs.hellos[0]).toEqual({ t: 'hello', v: expect.any(Number) as number, role: 'processor' });
  });

  it('shows a refused token as SR_AUTH in its status, and keeps redialling', async () => {
    const cs = await checkingCacheStore();
    const stranger = await writeSecret(path.join(root.dir, 'stranger.secret'));
    const p = await processorFor(cs, token(stranger, 'processor', 'proc-x'), pki.ca);
    const err = await waitFor('the refusal in status', () => p.processor.status().cacheStore.lastError);
    expect(err.code).toBe('SR_AUTH');
    expect(err.message).toContain('--cache-store-token-file');
    await waitFor('a second refused dial', () => (cs.refused.length >= 2 ? true : undefined));
    expect(cs.accepted).toBe(0);
  });

  it('without a token the upgrade is refused', async () => {
    const cs = await checkingCacheStore();
    const p = await processorFor(cs, undefined, pki.ca);
    const err = await waitFor('the refusal in status', () => p.processor.status().cacheStore.lastError);
    expect(err.code).toBe('SR_AUTH');
    expect(cs.accepted).toBe(0);
  });

  it('refuses a cache-store whose certificate another CA signed, before any proof is sent', async () => {
    const cs = await checkingCacheStore();
    const p = await processorFor(cs, token(csSecret, 'processor', 'proc-2'), otherCa.ca);
    const err = await waitFor('the TLS failure in status', () => p.processor.status().cacheStore.lastError);
    expect(err.message).toMatch(/certificate/i);
    expect(cs.accepted + cs.refused.length).toBe(0);
  });
});
