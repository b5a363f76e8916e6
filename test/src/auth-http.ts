import { authHeaders, loadTokenFile } from '@site-recovery/shared';

export interface AuthFetchInit {
  readonly method?: string;
  /** Sent as JSON with `Content-Type: application/json`. */
  readonly json?: unknown;
  /** Sent as is, with whatever type `headers` give (what a cross-site form or `fetch` would send). */
  readonly body?: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** A token file (0600): the request carries a fresh single-use proof of it. */
  readonly tokenFile?: string;
}

/**
 * `fetch` as the daemons' clients make requests: with a token, a proof made for this one request
 * (its nonce is spent by the server, so every call builds a new one).
 */
export function authFetch(url: string, init: AuthFetchInit = {}): Promise<Response> {
  const method = init.method ?? 'GET';
  const headers: Record<string, string> = { ...init.headers };
  if (init.tokenFile !== undefined) Object.assign(headers, authHeaders(loadTokenFile(init.tokenFile), url, method));
  if (init.json !== undefined) headers['content-type'] = 'application/json';
  return fetch(url, {
    method,
    headers,
    ...(init.json !== undefined
      ? { body: JSON.stringify(init.json) }
      : init.body !== undefined
        ? { body: init.body }
        : {}),
  });
}

/** GET a JSON document over HTTP, proving `tokenFile` when given. */
export async function getJson(url: string, tokenFile?: string): Promise<unknown> {
  const res = await authFetch(url, tokenFile !== undefined ? { tokenFile } : {});
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`);
  return res.json();
}
