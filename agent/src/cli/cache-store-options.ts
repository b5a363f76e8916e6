import {
  ErrorCode,
  SrError,
  isLoopbackHost,
  loadTokenFile,
  readTlsCaFile,
  type Logger,
  type ParsedToken,
} from '@site-recovery/shared';

/** The cache-store options as given (command line, or the config file where the line says nothing). */
export interface CacheStoreFlags {
  readonly vm: string;
  readonly url: string | undefined;
  readonly tokenFile: string | undefined;
  readonly tlsCa: string | undefined;
  readonly insecure: boolean;
}

/** How the agent reaches its cache-store. */
export interface CacheStoreLink {
  readonly url: string;
  readonly token?: ParsedToken;
  readonly tlsCa?: Buffer;
}

/** What to run to get a token, in every message that asks for one. */
export function tokenHint(vm: string): string {
  return `issue one on the cache-store's host with "sr token issue --secret-file <cache-store secret> --vm ${vm} --out FILE"`;
}

/**
 * Checks the cache-store options and reads the token and CA files. An agent that replicates needs a
 * token for its VM (`--token-file`), or `--insecure` to dial a cache-store that runs without
 * authentication; SR_BAD_OPTION says which. Files are read here, before the agent creates anything.
 */
export function cacheStoreLink(f: CacheStoreFlags, log: Logger): CacheStoreLink | undefined {
  if (f.url === undefined) {
    for (const [given, flag] of [
      [f.tokenFile, '--token-file'],
      [f.tlsCa, '--tls-ca'],
    ] as const) {
      if (given !== undefined)
        throw new SrError(ErrorCode.BAD_OPTION, `${flag} is for the cache-store link: add --cache-store URL`);
    }
    return undefined;
  }
  const url = parseUrl(f.url);
  if (url === undefined || (url.protocol !== 'ws:' && url.protocol !== 'wss:') || url.hostname === '') {
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `--cache-store "${f.url}" is not a ws:// or wss:// URL (for example wss://10.0.0.5:7400)`,
    );
  }
  if (f.tlsCa !== undefined && url.protocol !== 'wss:') {
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `--tls-ca verifies a TLS server, but --cache-store ${f.url} is plaintext: use a wss:// URL`,
    );
  }
  if (f.tokenFile !== undefined && f.insecure) {
    throw new SrError(
      ErrorCode.BAD_OPTION,
      '--token-file and --insecure contradict each other: give the token, or --insecure for a cache-store without authentication',
    );
  }
  if (f.tokenFile === undefined && !f.insecure) {
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `--cache-store needs --token-file FILE, an agent token for VM ${f.vm}: ${tokenHint(f.vm)}; ` +
        'or --insecure to replicate to a cache-store that runs without authentication',
    );
  }
  const token = f.tokenFile !== undefined ? loadTokenFile(f.tokenFile) : undefined;
  const tlsCa = readTlsCaFile(f.tlsCa);
  if (token === undefined)
    log.warn(
      { cacheStore: f.url },
      'authentication is off (--insecure): the agent presents no token to the cache-store',
    );
  if (url.protocol === 'ws:' && !isLoopbackHost(url.hostname))
    log.warn(
      { cacheStore: f.url },
      'the stream to the cache-store is not encrypted (ws://): disk contents travel in clear; use wss:// with --tls-ca off a trusted network',
    );
  return { url: f.url, ...(token !== undefined ? { token } : {}), ...(tlsCa !== undefined ? { tlsCa } : {}) };
}

function parseUrl(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

/**
 * Refuses a listen address off loopback unless `allowRemote` (the `<option>-allow-remote` flag):
 * `risk` says what anyone who reaches it could do.
 */
export function checkLoopbackListen(host: string, allowRemote: boolean, option: string, risk: string): void {
  if (allowRemote || isLoopbackHost(host)) return;
  throw new SrError(
    ErrorCode.BAD_OPTION,
    `${option} ${host} is not a loopback address, and ${risk}. Bind it to 127.0.0.1, or add ` +
      `${option}-allow-remote if only trusted machines can reach ${host}`,
  );
}
