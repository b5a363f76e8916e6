import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { authHeaders, issueToken, parseToken, type ParsedToken } from '@site-recovery/shared';
import { pino, type Logger } from 'pino';
import { WebSocket } from 'ws';
import { Peer } from '../helpers.js';

/** A secret as a daemon reads it: 32 random bytes. */
export const newSecret = (): Buffer => randomBytes(32);

/** What a test token is for; `expiresInS` negative makes one that has expired. */
export interface TokenSpec {
  readonly role: 'agent' | 'processor' | 'operator';
  readonly vm?: string;
  readonly id?: string;
  readonly expiresInS?: number;
}

let tokenCount = 0;

/** A token as `sr token issue` makes it, signed with `secret`. */
export function mint(secret: Buffer, spec: TokenSpec): ParsedToken {
  const now = Math.floor(Date.now() / 1000);
  const text = issueToken(secret, {
    id: spec.id ?? `t${++tokenCount}-${spec.role}`,
    role: spec.role,
    ...(spec.vm !== undefined ? { vm: spec.vm } : {}),
    issuedAt: now - 3600,
    expiresAt: now + (spec.expiresInS ?? 3600),
  });
  const p = parseToken(text);
  if (!p.ok) throw new Error(p.message);
  return p;
}

/** A fresh one-time proof of `token` for an upgrade to `url` (each connect needs its own). */
export const proofFor = (token: ParsedToken, url: string): Record<string, string> => authHeaders(token, url);

export interface OpenOptions {
  readonly headers?: Record<string, string>;
  /** CA to verify a wss:// server with. */
  readonly ca?: Buffer;
  readonly autoPong?: boolean;
  /** Source address to connect from (any 127.x.y.z is loopback). */
  readonly localAddress?: string;
}

// Peer.open takes no headers or CA (helpers.ts is another helper's file); its constructor only
// attaches listeners to a ws client, so it is called directly. Drop this once Peer.open takes them.
const PeerOf = Peer as unknown as new (ws: WebSocket) => Peer;

/** An upgrade the server refused: its HTTP status and `{code, message}` body. */
export class Refused extends Error {
  constructor(
    readonly status: number,
    readonly body: { code?: string; message?: string },
  ) {
    super(`upgrade refused with ${status}: ${JSON.stringify(body)}`);
  }
}

/** A test peer over a real ws client with `headers`; rejects with {@link Refused} on an HTTP answer. */
export function openPeer(url: string, o: OpenOptions = {}): Promise<Peer> {
  const ws = new WebSocket(url, {
    perMessageDeflate: false,
    maxPayload: 256 * 1024 * 1024,
    autoPong: o.autoPong ?? true,
    headers: o.headers ?? {},
    ...(o.ca !== undefined ? { ca: o.ca } : {}),
    ...(o.localAddress !== undefined ? { localAddress: o.localAddress } : {}),
  });
  const peer = new PeerOf(ws);
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(peer));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => reject(new Refused(res.statusCode ?? 0, parseBody(text))));
      res.on('error', reject);
    });
  });
}

/** The refusal an upgrade to `url` with `headers` gets (fails if it is accepted). */
export async function refusal(url: string, o: OpenOptions = {}): Promise<Refused> {
  try {
    const p = await openPeer(url, o);
    p.close();
  } catch (err) {
    if (err instanceof Refused) return err;
    throw err;
  }
  throw new Error(`the upgrade to ${url} was accepted`);
}

function parseBody(text: string): { code?: string; message?: string } {
  try {
    return JSON.parse(text) as { code?: string; message?: string };
  } catch {
    return { message: text };
  }
}

/** A plain request over a real socket (http or https), with a fresh proof when a token is given. */
export function request(
  base: string,
  p: string,
  o: { token?: ParsedToken; headers?: Record<string, string>; ca?: Buffer; method?: string } = {},
): Promise<{ status: number; body: unknown }> {
  const url = new URL(p, base);
  const method = o.method ?? 'GET';
  const headers = { ...(o.token !== undefined ? authHeaders(o.token, url, method) : {}), ...o.headers };
  const lib = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(url, { method, headers, agent: false, ...(o.ca !== undefined ? { ca: o.ca } : {}) });
    req.on('response', (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text === '' ? undefined : parseBody(text) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Every file under `dir` (relative path → bytes), to show a refused peer changed nothing. */
export async function snapshot(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const walk = async (d: string): Promise<void> => {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      const full = path.join(d, e.name);
      if (e.isDirectory()) await walk(full);
      else out.set(path.relative(dir, full), await fs.readFile(full));
    }
  };
  await walk(dir);
  return out;
}

/** A logger whose JSON lines the test reads (warn and up). */
export function captureLog(): { log: Logger; lines: () => Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'warn' },
    { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { log, lines: () => lines };
}
