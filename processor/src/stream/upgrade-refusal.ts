import type http from 'node:http';
import { ErrorCode } from '@site-recovery/shared';

/** Most of a refused upgrade's answer read for its `{code, message}`. */
export const MAX_REFUSAL_BYTES = 4096;

/**
 * What the cache-store said when it answered a WebSocket upgrade with an HTTP error instead (401/403:
 * the processor's token was refused): its `{code, message}` if the body holds them, else a code from
 * the status. Reads at most {@link MAX_REFUSAL_BYTES}; calls `done` once, however the answer ends.
 */
export function readUpgradeRefusal(
  res: http.IncomingMessage,
  done: (r: { status: number; code: string; message: string }) => void,
): void {
  const chunks: Buffer[] = [];
  let size = 0;
  res.on('data', (d: Buffer) => {
    if (size < MAX_REFUSAL_BYTES) chunks.push(d);
    size += d.length;
  });
  let settled = false;
  const settle = (): void => {
    if (settled) return;
    settled = true;
    const status = res.statusCode ?? 0;
    let code: string = status === 401 || status === 403 ? ErrorCode.AUTH : ErrorCode.PROTOCOL;
    let message = `the cache-store refused the connection (HTTP ${status})`;
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8').slice(0, MAX_REFUSAL_BYTES)) as {
        code?: unknown;
        message?: unknown;
      };
      if (typeof body.code === 'string' && /^SR_[A-Z0-9_]{1,40}$/.test(body.code)) code = body.code;
      if (typeof body.message === 'string') message += `: ${body.message.slice(0, 512)}`;
    } catch {
      // Not JSON: the status says enough.
    }
    if (code === ErrorCode.AUTH)
      message += "; check --cache-store-token-file (a processor token signed with the cache-store's secret)";
    done({ status, code, message });
  };
  res.once('end', settle);
  res.once('error', settle);
  res.once('close', settle);
}
