import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  TokenVerifier,
  authHeaders,
  createLogger,
  issueToken,
  newSecretText,
  parseToken,
  type DiskInfo,
  type ParsedToken,
  type TokenRole,
} from '@site-recovery/shared';
import { FileReplicaStore } from '../../src/replica/file-replica-store.js';
import { Processor, type ProcessorAuth } from '../../src/processor.js';

// Credentials made the way a user makes them (secret files 0600, tokens signed with them), a
// processor in this process that requires them, and raw HTTP requests that set every header.

export const VM = 'web01';
export const DISKS: DiskInfo[] = [{ id: 'os', size: 1 << 20 }];

export const log = createLogger('test-security', process.env['SR_LOG_LEVEL'] ?? 'silent');

/** A fresh directory under the system temp dir. */
export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `sr-${prefix}-`));
  return { dir, cleanup: () => fsp.rm(dir, { recursive: true, force: true }) };
}

/** Polls `probe` until it returns a value; past the deadline the failure names what never happened. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `${what} did not happen within ${timeoutMs} ms${last instanceof Error ? `: ${last.message}` : ''}`,
      );
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A secret in a 0600 file. */
export async function writeSecret(file: string): Promise<Buffer> {
  const text = newSecretText();
  await fsp.writeFile(file, text + '\n', { mode: 0o600 });
  return Buffer.from(text, 'hex');
}

export interface TestToken {
  readonly text: string;
  readonly parsed: ParsedToken;
}

/** A token signed with `secret`; good for an hour unless `expiresAt` says otherwise. */
export function token(
  secret: Buffer,
  role: TokenRole,
  id: string,
  more: { vm?: string; expiresAt?: number } = {},
): TestToken {
  const now = Math.floor(Date.now() / 1000);
  const text = issueToken(secret, {
    id,
    role,
    ...(more.vm !== undefined ? { vm: more.vm } : {}),
    issuedAt: now - 60,
    expiresAt: more.expiresAt ?? now + 3600,
  });
  const p = parseToken(text);
  if (!p.ok) throw new Error(p.message);
  return { text, parsed: p };
}

/** A token file (0600) holding `t`. */
export async function writeToken(file: string, t: TestToken, mode = 0o600): Promise<string> {
  await fsp.writeFile(file, t.text + '\n', { mode });
  await fsp.chmod(file, mode);
  return file;
}

/**
 * A replica of {@link VM} whose disk holds random bytes (so "unchanged" means something), as a
 * finished initial copy leaves it.
 */
export async function seededReplica(dataDir: string): Promise<void> {
  const replica = await new FileReplicaStore(dataDir).create(VM, 'g1', DISKS);
  await replica.savePosition({ appliedLsn: 0, initialSync: { state: 'done', done: 0, total: 0 } });
  await replica.close();
  await fsp.writeFile(replicaDisk(dataDir), randomBytes(DISKS[0]!.size));
}

export function replicaDisk(dataDir: string): string {
  return path.join(dataDir, 'replicas', VM, 'disks', 'os.img');
}

export interface AuthedProcessor {
  readonly processor: Processor;
  readonly dataDir: string;
  readonly listen: string;
  readonly port: number;
  /** The processor's own secret (operator tokens). */
  readonly secret: Buffer;
  readonly revokedFile: string;
  readonly auditFile: string;
  readonly operator: TestToken;
  close(): Promise<void>;
}

/** A processor in this process whose control API requires operator tokens of its own secret. */
export async function startAuthedProcessor(
  dir: string,
  cacheStoreUrl: string,
  more: { tls?: https.ServerOptions; auth?: Partial<ProcessorAuth>; cacheStoreCa?: Buffer } = {},
): Promise<AuthedProcessor> {
  const dataDir = path.join(dir, 'data');
  await seededReplica(dataDir);
  const secret = await writeSecret(path.join(dir, 'processor.secret'));
  const revokedFile = path.join(dir, 'revoked-tokens');
  await fsp.writeFile(revokedFile, '# revoked token ids\nrevoked-op\n');
  const verifier = new TokenVerifier({ secret, log, revokedTokensFile: revokedFile });
  const processor = await Processor.start({
    store: new FileReplicaStore(dataDir),
    dataDir,
    cacheStoreUrl,
    listenHost: '127.0.0.1',
    listenPort: 0,
    log,
    ...(more.tls !== undefined ? { tls: more.tls } : {}),
    ...(more.cacheStoreCa !== undefined ? { cacheStoreCa: more.cacheStoreCa } : {}),
    auth: { verifier, ...more.auth },
    options: { confirmIntervalMs: 20, backoff: { initialDelayMs: 10, maxDelayMs: 100 } },
  });
  const port = Number(processor.listen.split(':').pop());
  return {
    processor,
    dataDir,
    listen: processor.listen,
    port,
    secret,
    revokedFile,
    auditFile: more.auth?.auditLog ?? path.join(dataDir, 'audit.log'),
    operator: token(secret, 'operator', 'op-1'),
    close: async () => {
      await processor.close();
      verifier.close();
    },
  };
}

export interface RawRequest {
  readonly method: string;
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly body?: string;
  /** Sent as Host instead of the address dialled. */
  readonly host?: string;
  /** Proves this token (a fresh proof, for the Host sent). */
  readonly token?: ParsedToken;
  readonly https?: { ca?: Buffer };
}

export interface RawAnswer {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

/** One request to 127.0.0.1:`port` with exactly the headers given (and a proof of `token`). */
export function rawRequest(port: number, r: RawRequest): Promise<RawAnswer> {
  const host = r.host ?? `127.0.0.1:${port}`;
  const scheme = r.https !== undefined ? 'https' : 'http';
  const headers: Record<string, string> = {
    host,
    ...(r.token !== undefined ? authHeaders(r.token, `${scheme}://${host}${r.path}`, r.method) : {}),
    ...r.headers,
  };
  if (r.body !== undefined) headers['content-length'] = String(Buffer.byteLength(r.body));
  return new Promise((resolve, reject) => {
    const options = { host: '127.0.0.1', port, method: r.method, path: r.path, headers, agent: false as const };
    const req =
      r.https !== undefined
        ? https.request({
            ...options,
            ...(r.https.ca !== undefined ? { ca: r.https.ca } : {}),
            servername: 'localhost',
          })
        : http.request(options);
    req.on('error', reject);
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> });
        } catch {
          reject(new Error(`${r.method} ${r.path}: ${res.statusCode} with a body that is not JSON: ${text}`));
        }
      });
    });
    req.end(r.body);
  });
}

/** A `ws://` address nothing listens on (a loopback port that was free a moment ago). */
export async function deadUrl(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `ws://127.0.0.1:${port}/`;
}

/** The audit log's lines, parsed (none when it does not exist yet). */
export async function auditLines(file: string): Promise<Record<string, unknown>[]> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
