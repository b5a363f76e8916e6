import type https from 'node:https';
import path from 'node:path';
import {
  ErrorCode,
  SrError,
  TokenVerifier,
  checkInsecureListen,
  isLoopbackHost,
  loadTokenFile,
  readSecretFile,
  readTlsCaFile,
  readTlsServerFiles,
  type Logger,
  type ParsedToken,
} from '@site-recovery/shared';
import { parseAllowedHost } from '../api/control-auth.js';
import type { ProcessorAuth } from '../processor.js';

/** The security options of `sr-processor`, as commander parsed them. */
export interface SecurityCliOptions {
  authSecretFile?: string;
  revokedTokensFile?: string;
  cacheStoreTokenFile?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  allowedHosts?: string;
  auditLog?: string;
  insecure?: boolean;
}

/** A cache-store token this close to expiry is warned about at start. */
export const TOKEN_EXPIRY_WARNING_MS = 14 * 24 * 3600 * 1000;

export interface ProcessorSecurity {
  readonly auth: ProcessorAuth;
  readonly tls?: https.ServerOptions;
  readonly cacheStoreCa?: Buffer;
  /** Stops watching the revocation file. */
  close(): void;
}

/**
 * Turns the options into what the processor needs, refusing (SR_BAD_OPTION, saying how to fix it)
 * what would leave it open by accident: no secret without --insecure, --insecure off loopback, a
 * token of the wrong role, a CA for a plaintext link.
 */
export function resolveSecurity(
  o: SecurityCliOptions,
  where: { listenHost: string; cacheStoreUrl: string; dataDir: string },
  log: Logger,
): ProcessorSecurity {
  const insecure = o.insecure === true;
  let verifier: TokenVerifier | undefined;
  if (o.authSecretFile !== undefined) {
    verifier = new TokenVerifier({
      secret: readSecretFile(o.authSecretFile),
      log,
      ...(o.revokedTokensFile !== undefined ? { revokedTokensFile: o.revokedTokensFile } : {}),
    });
  } else {
    checkInsecureListen(where.listenHost, insecure, '--auth-secret-file');
    if (o.revokedTokensFile !== undefined)
      throw new SrError(ErrorCode.BAD_OPTION, '--revoked-tokens-file needs --auth-secret-file (tokens to check)');
    log.warn(
      { listen: where.listenHost },
      'authentication is off (--insecure): anyone who can reach the control API can fail over and commit; listening on loopback only',
    );
  }
  try {
    const cacheStoreToken = cacheStoreTokenOf(o, insecure, log);
    const wss = where.cacheStoreUrl.startsWith('wss:');
    if (o.tlsCa !== undefined && !wss)
      throw new SrError(
        ErrorCode.BAD_OPTION,
        `--tls-ca verifies a wss:// cache-store, and --cache-store is ${where.cacheStoreUrl}: use wss:// or drop --tls-ca`,
      );
    const tls = readTlsServerFiles(o.tlsCert, o.tlsKey);
    const cacheStoreCa = readTlsCaFile(o.tlsCa);
    const allowedHosts = (o.allowedHosts ?? '')
      .split(',')
      .filter((h) => h.trim() !== '')
      .map(parseAllowedHost);
    if (tls === undefined && !isLoopbackHost(where.listenHost))
      log.warn(
        { listen: where.listenHost },
        'the control API is served without TLS off loopback: requests and answers can be read on the way (give --tls-cert and --tls-key)',
      );
    if (['0.0.0.0', '::', '[::]'].includes(where.listenHost) && allowedHosts.length === 0)
      log.warn(
        { listen: where.listenHost },
        'listening on every address: give the names clients use in --allowed-hosts, or they are refused (SR_BAD_HOST)',
      );
    return {
      auth: {
        ...(verifier !== undefined ? { verifier } : {}),
        ...(cacheStoreToken !== undefined ? { cacheStoreToken } : {}),
        allowedHosts,
        auditLog: o.auditLog ?? path.join(where.dataDir, 'audit.log'),
      },
      ...(tls !== undefined ? { tls } : {}),
      ...(cacheStoreCa !== undefined ? { cacheStoreCa } : {}),
      close: () => verifier?.close(),
    };
  } catch (err) {
    verifier?.close();
    throw err;
  }
}

function cacheStoreTokenOf(o: SecurityCliOptions, insecure: boolean, log: Logger): ParsedToken | undefined {
  if (o.cacheStoreTokenFile === undefined) {
    if (!insecure)
      throw new SrError(
        ErrorCode.BAD_OPTION,
        'no credential for the cache-store: give --cache-store-token-file FILE (a processor token signed with the ' +
          "cache-store's secret: sr token issue --secret-file CACHE_STORE_SECRET --role processor --out FILE), " +
          'or --insecure if the cache-store runs without authentication',
      );
    log.warn('no --cache-store-token-file: connecting to the cache-store without a token (--insecure)');
    return undefined;
  }
  const token = loadTokenFile(o.cacheStoreTokenFile);
  const { id, role, expiresAt } = token.claims;
  if (role !== 'processor')
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `${o.cacheStoreTokenFile} holds a ${role} token (${id}); the cache-store takes a processor token from the processor`,
    );
  // Started all the same: failing over needs no cache-store (a new token takes a restart).
  const left = expiresAt * 1000 - Date.now();
  if (left <= 0)
    log.error({ id, expiredAt: new Date(expiresAt * 1000).toISOString() }, 'the cache-store token has expired');
  else if (left < TOKEN_EXPIRY_WARNING_MS)
    log.warn({ id, expiresAt: new Date(expiresAt * 1000).toISOString() }, 'the cache-store token expires soon');
  return token;
}
