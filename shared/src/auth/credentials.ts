import fs from 'node:fs';
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type tls from 'node:tls';
import { ErrorCode, SrError } from '../errors.js';
import { AUTH_HEADER, proveToken, type AuthResult, type RequestTarget, type TokenVerifier } from './proof.js';
import { readCredentialFile } from './secret-file.js';
import { parseToken, type ParsedToken, type TokenRole } from './token.js';

/** Reads and parses a token file (0600); SR_BAD_OPTION naming the file when it is not a usable token. */
export function loadTokenFile(file: string): ParsedToken {
  const p = parseToken(readCredentialFile(file, 'token'));
  if (!p.ok) throw new SrError(ErrorCode.BAD_OPTION, `the token file ${file} holds no usable token: ${p.message}`);
  return p;
}

/** Headers that prove `token` for one request to `url` (a WebSocket upgrade is a GET). */
export function authHeaders(token: ParsedToken, url: string | URL, method = 'GET'): Record<string, string> {
  const u = typeof url === 'string' ? new URL(url) : url;
  return { [AUTH_HEADER]: proveToken(token, { method, path: `${u.pathname}${u.search}`, host: u.host }) };
}

/** The method, path and Host of an incoming request, as a proof must name them. */
export function requestTarget(req: IncomingMessage): RequestTarget {
  return { method: req.method ?? 'GET', path: req.url ?? '/', host: req.headers.host ?? '' };
}

/** Checks the proof an incoming request (or WebSocket upgrade) carries. */
export function checkRequest(verifier: TokenVerifier, req: IncomingMessage, roles: readonly TokenRole[]): AuthResult {
  const header = req.headers[AUTH_HEADER];
  return verifier.check(Array.isArray(header) ? header[0] : header, requestTarget(req), { roles });
}

/**
 * Answers a WebSocket upgrade with an HTTP error and closes the socket, before any frame is read.
 * The body says what was wrong; it carries nothing of the credential.
 */
export function refuseUpgrade(socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify({ code, message }) + '\n';
  const reason = STATUS_CODES[status] ?? 'Error';
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** True for 127.0.0.0/8, ::1 and "localhost". */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  if (net.isIPv4(h)) return h.startsWith('127.');
  if (h.startsWith('::ffff:')) return h.slice(7).startsWith('127.');
  return false;
}

/**
 * What a daemon with no secret may do: with `insecure`, listen on loopback only (refused elsewhere);
 * without it, not start at all. Throws SR_BAD_OPTION with the fix.
 */
export function checkInsecureListen(listenHost: string, insecure: boolean, secretOption: string): void {
  if (!insecure) {
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `no credentials: give ${secretOption} FILE (create one with "sr secret new --out FILE"), ` +
        'or --insecure to run without authentication on loopback only',
    );
  }
  if (!isLoopbackHost(listenHost)) {
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `--insecure listens on loopback only, not ${listenHost}: give ${secretOption} FILE to listen elsewhere`,
    );
  }
}

/** Server TLS options from PEM files (`--tls-cert`, `--tls-key`); both or neither. */
export function readTlsServerFiles(
  certFile: string | undefined,
  keyFile: string | undefined,
): tls.TlsOptions | undefined {
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined || keyFile === undefined)
    throw new SrError(ErrorCode.BAD_OPTION, '--tls-cert and --tls-key go together: give both, or neither');
  const read = (file: string, what: string): Buffer => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new SrError(ErrorCode.BAD_OPTION, `cannot read the TLS ${what} ${file}: ${(err as Error).message}`);
    }
  };
  readCredentialFile(keyFile, 'TLS key'); // refuses a private key others can read
  return { cert: read(certFile, 'certificate'), key: read(keyFile, 'key') };
}

/** The CA a client verifies the server with (`--tls-ca`); undefined means the system's CAs. */
export function readTlsCaFile(file: string | undefined): Buffer | undefined {
  if (file === undefined) return undefined;
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new SrError(ErrorCode.BAD_OPTION, `cannot read the TLS CA ${file}: ${(err as Error).message}`);
  }
}
