import type http from 'node:http';
import WebSocket from 'ws';
import { ErrorCode, authHeaders, type ParsedToken } from '@site-recovery/shared';

/** How one dial to the cache-store is made. */
export interface DialOptions {
  /** ws:// or wss:// URL of the cache-store. */
  readonly url: string;
  /** Proved afresh on this dial (a proof's nonce is single-use, so no header is ever sent twice). */
  readonly token?: ParsedToken;
  /** PEM CA(s) a wss:// server's certificate must chain to; absent: the system's CAs. */
  readonly tlsCa?: string | Buffer;
  readonly maxPayload: number;
  readonly handshakeTimeoutMs: number;
}

/** Why the cache-store would not take this connection. */
export interface DialRefusal {
  /** HTTP status of the answer; absent when the upgrade went through and the hello was refused. */
  readonly status?: number;
  /** The server's `code` (SR_AUTH for a refused credential), or `HTTP <status>` when it sent none. */
  readonly code: string;
  readonly message: string;
}

/** Most bytes of a refusal's body read: the server's `{code, message}` is a line. */
export const MAX_REFUSAL_BODY_BYTES = 4096;

/**
 * Opens a connection to the cache-store: the agent's proof in the upgrade's `x-sr-auth` header, the
 * server's certificate verified against `tlsCa` for wss://. An HTTP answer other than 101 (401/403
 * for a credential the cache-store refuses) is read, handed to `onRefused`, and the connection
 * terminated, so it ends in the usual 'close' and the caller's reconnect logic runs.
 */
export function dialCacheStore(o: DialOptions, onRefused: (r: DialRefusal) => void): WebSocket {
  const ws = new WebSocket(o.url, {
    perMessageDeflate: false,
    maxPayload: o.maxPayload,
    handshakeTimeout: o.handshakeTimeoutMs,
    // A zero masking key makes ws skip masking: client masking protects browsers' intermediaries
    // from cache poisoning, which does not apply to this link, and it costs a pass over every byte.
    generateMask: (mask: Buffer) => void mask.fill(0),
    ...(o.token !== undefined ? { headers: authHeaders(o.token, o.url) } : {}),
    ...(o.tlsCa !== undefined ? { ca: o.tlsCa } : {}),
  });
  ws.on('unexpected-response', (_req: http.ClientRequest, res: http.IncomingMessage) => {
    void readRefusal(res).then((refusal) => {
      if (ws.readyState === WebSocket.CONNECTING) onRefused(refusal);
      ws.terminate();
    });
  });
  return ws;
}

async function readRefusal(res: http.IncomingMessage): Promise<DialRefusal> {
  const status = res.statusCode ?? 0;
  const chunks: Buffer[] = [];
  let bytes = 0;
  await new Promise<void>((resolve) => {
    res.on('data', (chunk: Buffer) => {
      if (bytes < MAX_REFUSAL_BODY_BYTES) chunks.push(chunk.subarray(0, MAX_REFUSAL_BODY_BYTES - bytes));
      bytes += chunk.length;
      if (bytes >= MAX_REFUSAL_BODY_BYTES) resolve();
    });
    res.once('end', resolve);
    res.once('close', resolve);
    res.once('error', () => resolve());
  });
  const text = Buffer.concat(chunks).toString('utf8');
  let body: { code?: unknown; message?: unknown } = {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed === 'object' && parsed !== null) body = parsed;
  } catch {
    // Not the cache-store's JSON (a proxy's page, say): its text stands as the message.
  }
  const fallback = status === 401 || status === 403 ? ErrorCode.AUTH : `HTTP ${status}`;
  const code = typeof body.code === 'string' && /^[A-Z0-9_]{1,40}$/.test(body.code) ? body.code : fallback;
  const message =
    typeof body.message === 'string'
      ? body.message.slice(0, 500)
      : `${status} ${res.statusMessage ?? ''}`.trim() + (text.trim() !== '' ? `: ${text.trim().slice(0, 200)}` : '');
  return { status, code, message };
}
