import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  AUTH_HEADER,
  ErrorCode,
  TokenVerifier,
  createLogger,
  issueToken,
  newSecretText,
  parseToken,
  proveToken,
  readSecretFile,
  type ParsedToken,
  type RequestTarget,
  type TokenClaims,
} from '../../src/index.js';

const log = createLogger('auth-test', 'silent');
const NOW = Date.UTC(2026, 11, 7, 12, 0, 0);
const nowS = NOW / 1000;
const secret = Buffer.alloc(32, 7);
const other = Buffer.alloc(32, 8);
const target: RequestTarget = { method: 'GET', path: '/v1/agent', host: '127.0.0.1:7400' };
const verifiers: TokenVerifier[] = [];

function verifier(o: Partial<ConstructorParameters<typeof TokenVerifier>[0]> = {}): TokenVerifier {
  const v = new TokenVerifier({ secret, log, ...o });
  verifiers.push(v);
  return v;
}

function token(claims: Partial<TokenClaims> = {}, key = secret): ParsedToken {
  const text = issueToken(key, {
    id: 'tok-1',
    role: 'agent',
    vm: 'web01',
    issuedAt: nowS,
    expiresAt: nowS + 3600,
    ...claims,
  });
  const p = parseToken(text);
  if (!p.ok) throw new Error(p.message);
  return p;
}

afterEach(() => {
  for (const v of verifiers.splice(0)) v.close();
});

describe('tokens and proofs', () => {
  it('a fresh proof of a good token is accepted once, with its claims', () => {
    const v = verifier();
    const header = proveToken(token(), target, NOW);
    expect(v.check(header, target, { roles: ['agent'] }, NOW)).toEqual({
      ok: true,
      claims: { id: 'tok-1', role: 'agent', vm: 'web01', issuedAt: nowS, expiresAt: nowS + 3600 },
    });
    expect(v.check(header, target, { roles: ['agent'] }, NOW + 1000)).toMatchObject({
      ok: false,
      code: ErrorCode.AUTH,
      message: expect.stringMatching(/replayed/) as string,
    });
  });

  it.each<[string, () => string | undefined, Partial<RequestTarget>?]>([
    ['no header', () => undefined],
    ['garbage', () => 'hello'],
    ['the bare token (its MAC must never travel)', () => issueToken(secret, token().claims)],
    ['a token signed with another secret', () => proveToken(token({}, other), target, NOW)],
    ['a proof made for another path', () => proveToken(token(), { ...target, path: '/v1/processor' }, NOW)],
    ['a proof made for another host', () => proveToken(token(), { ...target, host: 'evil.example' }, NOW)],
    ['an expired token', () => proveToken(token({ expiresAt: nowS - 1 }), target, NOW)],
    ['a stale proof', () => proveToken(token(), target, NOW - 10 * 60_000)],
    ['a proof from the future', () => proveToken(token(), target, NOW + 10 * 60_000)],
  ])('refuses %s with SR_AUTH', (_what, header) => {
    expect(verifier().check(header(), target, { roles: ['agent'] }, NOW)).toMatchObject({
      ok: false,
      code: ErrorCode.AUTH,
    });
  });

  it('claims changed after signing are refused', () => {
    const good = proveToken(token(), target, NOW);
    const parts = good.split('.');
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString()) as Record<string, unknown>;
    parts[1] = Buffer.from(JSON.stringify({ ...claims, vm: 'db01' })).toString('base64url');
    expect(verifier().check(parts.join('.'), target, { roles: ['agent'] }, NOW)).toMatchObject({ ok: false });
  });

  it('only the one spelling of a proof is accepted (base64url decoding forgives stray characters)', () => {
    const header = proveToken(token(), target, NOW);
    const last = header.at(-1)!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const sibling = alphabet[alphabet.indexOf(last) ^ 1]!; // the same decoded bytes in a 43-character MAC
    for (const forged of [header.slice(0, -1) + sibling, header + '=', header.slice(0, 20) + '*' + header.slice(20)]) {
      expect(verifier().check(forged, target, { roles: ['agent'] }, NOW)).toMatchObject({ ok: false });
    }
    expect(verifier().check(header, target, { roles: ['agent'] }, NOW).ok).toBe(true);
  });

  it('a role may do only what it is allowed', () => {
    const v = verifier();
    const header = proveToken(token({ role: 'processor', vm: undefined }), target, NOW);
    expect(v.check(header, target, { roles: ['operator'] }, NOW)).toMatchObject({
      ok: false,
      message: expect.stringMatching(/processor credential/) as string,
    });
  });

  it('a source-region secret cannot mint an operator token for the processor', () => {
    const processorSecret = Buffer.alloc(32, 9);
    const v = verifier({ secret: processorSecret });
    const minted = proveToken(token({ role: 'operator', vm: undefined }, secret), target, NOW);
    expect(v.check(minted, target, { roles: ['operator'] }, NOW)).toMatchObject({ ok: false, code: ErrorCode.AUTH });
  });

  it('refuses new nonces past maxNonces instead of forgetting ones still in the window', () => {
    const v = verifier({ maxNonces: 2 });
    const t = token();
    expect(v.check(proveToken(t, target, NOW), target, { roles: ['agent'] }, NOW).ok).toBe(true);
    expect(v.check(proveToken(t, target, NOW), target, { roles: ['agent'] }, NOW).ok).toBe(true);
    expect(v.check(proveToken(t, target, NOW), target, { roles: ['agent'] }, NOW)).toMatchObject({
      code: ErrorCode.LIMIT,
    });
    const later = NOW + 5 * 60_000;
    expect(v.check(proveToken(t, target, later), target, { roles: ['agent'] }, later).ok).toBe(true);
  });

  it('an agent token names exactly one VM; other roles none', () => {
    expect(() => issueToken(secret, { ...token().claims, vm: undefined })).toThrow();
    expect(() => issueToken(secret, { ...token().claims, role: 'operator' })).toThrow();
    expect(() => issueToken(secret, { ...token().claims, vm: '../etc' })).toThrow();
  });
});

describe('revocation and secret files', () => {
  let dir: string;
  afterEach(async () => {
    if (dir !== undefined) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('a token listed in the revocation file is refused, and the list is read again when it changes', async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'sr-auth-'));
    const file = path.join(dir, 'revoked');
    await fsp.writeFile(file, '# none yet\n');
    const v = verifier({ revokedTokensFile: file });
    const t = token({ expiresAt: Math.floor(Date.now() / 1000) + 3600 });
    expect(v.check(proveToken(t, target), target, { roles: ['agent'] }).ok).toBe(true);
    await fsp.writeFile(file, 'other\ntok-1  # leaked\n');
    const deadline = Date.now() + 10_000;
    while (v.check(proveToken(t, target), target, { roles: ['agent'] }).ok) {
      if (Date.now() > deadline) throw new Error('the revocation file change was never picked up');
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(v.check(proveToken(t, target), target, { roles: ['agent'] })).toMatchObject({
      message: expect.stringMatching(/revoked/) as string,
    });
  });

  it('a secret file readable by others, or too short, is refused with what to do', async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'sr-auth-'));
    const file = path.join(dir, 'secret');
    fs.writeFileSync(file, newSecretText(), { mode: 0o644 });
    expect(() => readSecretFile(file)).toThrow(/chmod 600/);
    fs.chmodSync(file, 0o600);
    expect(readSecretFile(file)).toHaveLength(32);
    fs.writeFileSync(file, 'abcd');
    expect(() => readSecretFile(file)).toThrow(/fewer than 32/);
  });

  it('the header name is stable', () => {
    expect(AUTH_HEADER).toBe('x-sr-auth');
  });
});
