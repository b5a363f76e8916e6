export { issueToken, parseToken, parseClaims, MAX_TOKEN_CHARS, TOKEN_PREFIX } from './token.js';
export type { ParsedToken, TokenClaims, TokenFailure, TokenRole } from './token.js';
export { readCredentialFile, readSecretFile, newSecretText, MIN_SECRET_BYTES } from './secret-file.js';
export { RevocationList, DEFAULT_REVOCATION_POLL_MS } from './revocation-list.js';
export { AUTH_HEADER, TokenVerifier, proveToken, DEFAULT_CLOCK_SKEW_MS, DEFAULT_MAX_NONCES } from './proof.js';
export type { AuthResult, RequestTarget, Requirement, TokenVerifierOptions } from './proof.js';
export {
  loadTokenFile,
  authHeaders,
  requestTarget,
  checkRequest,
  refuseUpgrade,
  isLoopbackHost,
  checkInsecureListen,
  readTlsServerFiles,
  readTlsCaFile,
} from './credentials.js';
