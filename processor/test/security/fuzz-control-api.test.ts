import { createHash, randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { RecordKind, authHeaders, proveToken, recordChecksum, type ParsedToken } from '@site-recovery/shared';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  VM,
  deadUrl,
  startAuthedProcessor,
  tempDir,
  token,
  writeSecret,
  type AuthedProcessor,
} from './security-fixture.js';

// The control API as anyone who reaches its port meets it: whatever method, path, headers and body
// they send, without a good operator proof every answer is a JSON {code, message} with a 4xx status
// (only a bare GET /health answers {ok}), the processor keeps serving, and nothing of its replica, its
// points, its configuration or its failover state changes.

/** Wall-clock budget of each property (SR_FUZZ_MS raises it for a longer local hunt). Default 4 s. */
const FUZZ_MS = Number(process.env['SR_FUZZ_MS'] ?? 4000);
const budget = { numRuns: 1_000_000, interruptAfterTimeLimit: FUZZ_MS };

let root: { dir: string; cleanup: () => Promise<void> };
let p: AuthedProcessor;
/** Tokens an attacker may hold, none of them good for the control API. */
const bad: Record<string, ParsedToken> = {};
/** A proof of the real operator token that was already used once. */
let replayed = '';

beforeAll(async () => {
  root = await tempDir('fuzz-control-api');
  p = await startAuthedProcessor(root.dir, await deadUrl());
  const v = p.processor.get(VM)!;
  // Two points, so a commit or a failover would have something to drop or pick.
  for (let i = 0; i < 2; i++) {
    const data = randomBytes(4096);
    const write = { lsn: v.appliedLsn + 1, kind: RecordKind.WRITE, disk: 0, offset: 4096 * i, length: 4096, data };
    await v.applyBatch('g1', [{ ...write, crc: recordChecksum(write, data) }], undefined);
    await v.cutPoint('crash');
  }
  const now = Math.floor(Date.now() / 1000);
  const stranger = await writeSecret(path.join(root.dir, 'stranger.secret'));
  const source = await writeSecret(path.join(root.dir, 'cache-store.secret'));
  bad['stranger'] = token(stranger, 'operator', 'op-x').parsed;
  bad['source region'] = token(source, 'operator', 'op-cs').parsed;
  bad['processor role'] = token(p.secret, 'processor', 'proc-1').parsed;
  bad['agent role'] = token(p.secret, 'agent', 'agent-1', { vm: VM }).parsed;
  bad['expired'] = token(p.secret, 'operator', 'op-old', { expiresAt: now - 1 }).parsed;
  bad['revoked'] = token(p.secret, 'operator', 'revoked-op').parsed;
  replayed = authHeaders(p.operator.parsed, `http://${p.listen}/status`, 'GET')['x-sr-auth']!;
  expect((await send(request({ method: 'GET', target: '/status', auth: replayed })))?.status).toBe(200);
});
afterAll(async () => {
  await p.close();
  await root.cleanup();
});

/** What a request could change: every file of the data directory but the audit log, and the VM's state. */
async function digest(): Promise<string> {
  const h = createHash('sha256');
  const walk = async (dir: string): Promise<void> => {
    for (const e of (await fsp.readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const file = path.join(dir, e.name);
      if (e.isDirectory()) await walk(file);
      else if (file !== p.auditFile) h.update(`${file}\0`).update(await fsp.readFile(file));
    }
  };
  await walk(p.dataDir);
  const v = p.processor.get(VM)!;
  const vm = p.processor.status().vms.find((s) => s.vm === VM);
  h.update(JSON.stringify([v.current?.points.list().map((pt) => pt.id), vm?.failover]));
  return h.digest('hex');
}

interface Request {
  readonly method: string;
  readonly target: string;
  /** The Host header; the listen address unless given. */
  readonly host?: string | null;
  readonly headers?: readonly (readonly [string, string])[];
  readonly auth?: string;
  readonly body?: Buffer;
  readonly chunked?: boolean;
}

/** The bytes of `r`, framed correctly (a body always ends where its framing says). */
function request(r: Request): Buffer {
  const lines = [`${r.method} ${r.target} HTTP/1.1`];
  if (r.host !== null) lines.push(`host: ${r.host ?? p.listen}`);
  for (const [k, v] of r.headers ?? []) lines.push(`${k}: ${v}`);
  if (r.auth !== undefined) lines.push(`x-sr-auth: ${r.auth}`);
  const body = r.body ?? Buffer.alloc(0);
  if (r.chunked === true) lines.push('transfer-encoding: chunked');
  else if (body.length > 0) lines.push(`content-length: ${body.length}`);
  lines.push('connection: close', '', '');
  const framed =
    r.chunked === true
      ? Buffer.concat([
          Buffer.from(`${body.length.toString(16)}\r\n`),
          body,
          Buffer.from(body.length ? '\r\n0\r\n\r\n' : '\r\n'),
        ])
      : body;
  return Buffer.concat([Buffer.from(lines.join('\r\n'), 'latin1'), framed]);
}

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/**
 * Sends raw bytes on a fresh connection; the answer, or undefined if the server only hung up. With
 * `halfClose` the client ends its side after them (so a cut-off request ends), which makes Node drop
 * a request still in progress: only for bytes that are not a whole request.
 */
function send(bytes: Buffer, halfClose = false, ms = 10_000): Promise<Answer | undefined> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port: p.port });
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer and no hang-up within ${ms} ms to ${JSON.stringify(bytes.toString('latin1'))}`));
    }, ms);
    const finish = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(parse(got));
    };
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const a = parse(got);
      if (a !== undefined && a.body.length >= Number(a.headers['content-length'] ?? Infinity)) finish();
    });
    socket.on('close', finish);
    socket.on('error', () => undefined); // a reset ends in 'close'
    if (halfClose) socket.end(bytes);
    else socket.write(bytes);
  });
}

/** The first response in `raw` after any 100 Continue: its head, and its body as far as it has come. */
function parse(raw: Buffer): Answer | undefined {
  let text = raw.toString('latin1');
  while (/^HTTP\/1\.1 100 /.test(text) && text.includes('\r\n\r\n')) text = text.slice(text.indexOf('\r\n\r\n') + 4);
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
  const length = headers['content-length'] === undefined ? undefined : end + 4 + Number(headers['content-length']);
  return {
    status: Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine!)?.[1] ?? 0),
    headers,
    body: text.slice(end + 4, length),
  };
}

/** Every route with the method and a body it takes. */
const ROUTES: readonly (readonly [string, string, object?])[] = [
  ['GET', '/status'],
  ['GET', '/health'],
  ['GET', `/vms/${VM}/points`],
  ['GET', `/vms/${VM}/config`],
  ['PUT', `/vms/${VM}/config`, { retentionMs: 7_200_000 }],
  ['POST', `/vms/${VM}/failover`, { point: 'latest-processed' }],
  ['POST', `/vms/${VM}/test-failover`, { point: 'latest-processed', network: 'test' }],
  ['POST', `/vms/${VM}/test-failover-cleanup`, {}],
  ['POST', `/vms/${VM}/commit`, {}],
];
const PATHS = ROUTES.map(([, path]) => path);
/** Header names the request framing owns; the fuzzer leaves them to {@link request}. */
const FRAMING = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'x-sr-auth']);

const targetArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...PATHS) },
  fc
    .tuple(fc.constantFrom(...PATHS), fc.constantFrom('/', '?', '%', '/..', '?x=1', '%2f..', ';a', '//', '/%00'))
    .map(([a, b]) => a + b),
  fc
    .array(
      fc.oneof(
        fc.constantFrom('vms', VM, 'status', 'health', 'commit', 'failover', '..', '.', '%2e%2e', '%00', '%ZZ', ''),
        fc.stringMatching(/^[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,12}$/),
      ),
      { maxLength: 5 },
    )
    .map((s) => '/' + s.join('/')),
  fc.constantFrom('*', 'http://127.0.0.1/status', `http://evil.example/vms/${VM}/commit`, '/' + 'a'.repeat(9000)),
);

const headerArb = fc.tuple(
  fc.oneof(
    fc.constantFrom('content-type', 'origin', 'cookie', 'authorization', 'x-forwarded-for', 'x-forwarded-host'),
    fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/).filter((n) => !FRAMING.has(n)),
  ),
  fc.oneof(
    fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'APPLICATION/JSON', ''),
    fc.constantFrom('application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonp'),
    fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,38}[\x21-\x7e])?$/),
  ),
);

/** A body: none, the one the route takes (which a good proof would have it act on), or any other. */
const bodyArb = fc.oneof(
  fc.constant(undefined),
  fc.constant("the route's own" as const),
  fc.json(),
  fc.uint8Array({ maxLength: 64 }),
  fc.constant('x'.repeat(70 * 1024)),
);

/** How a request proves (or fails to prove) an operator token. */
const authArb = fc.oneof(
  fc.constant({ kind: 'none' as const }),
  fc.constant({ kind: 'replayed' as const }),
  fc.constant({ kind: 'other path' as const }),
  fc.record({ kind: fc.constant('edited' as const), at: fc.nat(), char: fc.constantFrom('A', '_', '.', '0') }),
  fc.record({
    kind: fc.constant('token' as const),
    which: fc.constantFrom('stranger', 'source region', 'processor role', 'agent role', 'expired', 'revoked'),
  }),
  fc.record({ kind: fc.constant('garbage' as const), text: fc.stringMatching(/^[\x21-\x7e]{1,200}$/) }),
  fc.constant({ kind: 'garbage' as const, text: `srt1.${'A'.repeat(4000)}.1.2.3` }),
);
type Auth = typeof authArb extends fc.Arbitrary<infer A> ? A : never;

/** The x-sr-auth header `a` makes for a request to `method target` with Host `host`. */
function proofFor(a: Auth, method: string, target: string, host: string): string | undefined {
  // Proved for exactly what the request line and Host say, as a client holding the token would.
  const proof = (t: ParsedToken, path = target): string => proveToken(t, { method, path, host });
  switch (a.kind) {
    case 'none':
      return undefined;
    case 'replayed':
      return replayed;
    case 'other path':
      return proof(p.operator.parsed, '/elsewhere');
    case 'edited': {
      // Not the last character: its low bits carry no MAC bits, so editing them leaves the same proof.
      const good = proof(p.operator.parsed);
      const at = a.at % (good.length - 1);
      return good.slice(0, at) + (good[at] === a.char ? 'B' : a.char) + good.slice(at + 1);
    }
    case 'token':
      return proof(bad[a.which]!);
    case 'garbage':
      return a.text;
  }
}

/** The path the server routes `target` by (as jsonApi parses it). */
function pathOf(target: string): string | undefined {
  try {
    return new URL(target, 'http://localhost').pathname;
  } catch {
    return undefined;
  }
}

function isJsonType(answer: Answer): boolean {
  return answer.headers['content-type']?.split(';')[0]?.trim() === 'application/json';
}

describe('control API under fuzzing, with authentication on', () => {
  it('answers any well-formed request without a good operator proof with a JSON 4xx, changing nothing', async () => {
    const start = await digest();
    const hostArb = fc.oneof(
      { weight: 4, arbitrary: fc.constant(p.listen) },
      fc.constantFrom(`localhost:${p.port}`, `127.0.0.1:${p.port + 1}`, 'evil.example', `evil.example:${p.port}`, ''),
      fc.stringMatching(/^[a-z0-9.:[\]-]{1,24}$/),
    );
    const methods = http.METHODS.filter((m) => m !== 'CONNECT');
    const line = fc.oneof(
      // A route with the method it takes: what gets past routing to the Host, token and type checks.
      { weight: 2, arbitrary: fc.constantFrom(...ROUTES).map(([method, target, own]) => ({ method, target, own })) },
      fc.record({ method: fc.constantFrom(...methods), target: targetArb, own: fc.constant(undefined) }),
    );
    const req = fc.record({
      line,
      host: hostArb,
      json: fc.boolean(),
      headers: fc.array(headerArb, { maxLength: 4 }),
      auth: authArb,
      body: bodyArb,
      chunked: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(req, async ({ line: { method, target, own }, json, headers, body: b, ...rest }) => {
        // Taken per run, so the counterexample is the request that changed something, not any later one.
        const before = await digest();
        const body =
          b === undefined
            ? undefined
            : Buffer.from(typeof b === 'string' ? (b === "the route's own" ? JSON.stringify(own ?? {}) : b) : b);
        const r = {
          method,
          target,
          headers: json ? [['content-type', 'application/json'] as const, ...headers] : headers,
          body,
          ...rest,
        };
        const auth = proofFor(r.auth, r.method, r.target, r.host);
        const a = await send(request({ ...r, auth }));
        expect(a, 'the server hung up without answering').toBeDefined();
        const what = `${a!.status} ${a!.body.slice(0, 200)}`;
        expect(isJsonType(a!), `content-type ${a!.headers['content-type']}: ${what}`).toBe(true);
        const bareHealth =
          (r.method === 'GET' || r.method === 'HEAD') && auth === undefined && pathOf(r.target) === '/health';
        const health = a!.status === 200 || a!.status === 503;
        if (health) expect(bareHealth, `${a!.status} for this request: ${what}`).toBe(true);
        else expect(a!.status >= 400 && a!.status < 500, `status: ${what}`).toBe(true);
        if (r.method !== 'HEAD') {
          const json = JSON.parse(a!.body) as Record<string, unknown>;
          if (health) expect(Object.keys(json), what).toEqual(['ok']);
          else expect([typeof json['code'], typeof json['message']], what).toEqual(['string', 'string']);
        }
        expect(await digest(), 'the replica, its points or its state changed').toBe(before);
      }),
      budget,
    );
    expect(await digest()).toBe(start);
  });

  it('answers bytes that are not a proper request with a 4xx or a hang-up, and keeps serving', async () => {
    const start = await digest();
    const sample = (target: string, extra = ''): string =>
      `POST ${target} HTTP/1.1\r\nhost: ${p.listen}\r\ncontent-type: application/json\r\n${extra}`;
    const commit = `/vms/${VM}/commit`;
    const broken = fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
      // A proper request with bytes flipped, cut or spliced in (CR, LF, NUL, a space).
      fc
        .record({
          at: fc.nat(),
          edit: fc.oneof(fc.constantFrom('\r', '\n', '\0', ' ', ':', '\r\n\r\n'), fc.constant(null)),
        })
        .map(({ at, edit }) => {
          const good = request({ method: 'POST', target: commit, body: Buffer.from('{}') }).toString('latin1');
          const i = at % good.length;
          return Buffer.from(edit === null ? good.slice(0, i) : good.slice(0, i) + edit + good.slice(i), 'latin1');
        }),
      fc
        .constantFrom(
          `G T /status HTTP/1.1\r\nhost: ${p.listen}\r\n\r\n`,
          `CONNECT 127.0.0.1:${p.port} HTTP/1.1\r\nhost: ${p.listen}\r\n\r\n`,
          `GET /status HTTP/1.1\r\n\r\n`,
          `GET /status HTTP/9.9\r\nhost: ${p.listen}\r\n\r\n`,
          `GET /status HTTP/1.1\r\nhost: ${p.listen}\r\nx: ${'a'.repeat(20_000)}\r\n\r\n`,
          `GET /${'a'.repeat(20_000)} HTTP/1.1\r\nhost: ${p.listen}\r\n\r\n`,
          `GET /status HTTP/1.1\r\nhost: ${p.listen}\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n`,
          `GET /health HTTP/1.1\r\nhost: ${p.listen}\r\nexpect: the-unexpected\r\n\r\n`,
          sample(commit, 'content-length: 10\r\ncontent-length: 2\r\n\r\n{}'),
          sample(commit, 'content-length: 2\r\ntransfer-encoding: chunked\r\n\r\n{}'),
          sample(commit, 'transfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n'),
          sample(commit, 'content-length: -1\r\n\r\n'),
          // Shorter than declared, then the half-close: the body never completes.
          sample('/health', 'content-length: 100\r\n\r\n{}'),
        )
        .map((t) => Buffer.from(t, 'latin1')),
    );
    await fc.assert(
      fc.asyncProperty(broken, async (bytes) => {
        const before = await digest();
        const a = await send(bytes, true);
        if (a !== undefined) {
          const what = `${a.status} ${a.body.slice(0, 200)}`;
          expect(a.status >= 400 && a.status < 500, `status: ${what}`).toBe(true);
          if (isJsonType(a)) expect(Object.keys(JSON.parse(a.body) as object), what).toEqual(['code', 'message']);
        }
        expect(await digest(), 'the replica, its points or its state changed').toBe(before);
      }),
      budget,
    );
    expect(await digest()).toBe(start);
    const auth = proveToken(p.operator.parsed, { method: 'GET', path: '/status', host: p.listen });
    const status = await send(request({ method: 'GET', target: '/status', auth }));
    expect(status?.status, 'the processor no longer serves its operator').toBe(200);
  });
});
