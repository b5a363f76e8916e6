import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { ErrorCode, SrError } from '../errors.js';

/** Shortest secret accepted: HMAC-SHA256 keys of fewer than 32 bytes weaken it. */
export const MIN_SECRET_BYTES = 32;

/**
 * Reads a secret or a token from a file. Refused (SR_BAD_OPTION, saying how to fix it) unless the
 * file is a regular file that neither group nor others may read: a credential on a command line
 * or in a readable file is one `ps` or one backup away from anyone.
 */
export function readCredentialFile(file: string, what: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    throw new SrError(ErrorCode.BAD_OPTION, `cannot read the ${what} file ${file}: ${(err as Error).message}`);
  }
  if (!st.isFile()) throw new SrError(ErrorCode.BAD_OPTION, `the ${what} file ${file} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    const mode = (st.mode & 0o777).toString(8);
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `the ${what} file ${file} is readable by others (mode ${mode}): run chmod 600 ${file}`,
    );
  }
  const text = fs.readFileSync(file, 'utf8').trim();
  if (text === '') throw new SrError(ErrorCode.BAD_OPTION, `the ${what} file ${file} is empty`);
  return text;
}

/** A daemon's signing secret: hex or base64 text of at least {@link MIN_SECRET_BYTES} bytes. */
export function readSecretFile(file: string): Buffer {
  const text = readCredentialFile(file, 'secret');
  const bytes = /^[0-9a-fA-F]+$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  if (bytes.length < MIN_SECRET_BYTES) {
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `the secret in ${file} has ${bytes.length} bytes, fewer than ${MIN_SECRET_BYTES}: create one with sr secret new`,
    );
  }
  return bytes;
}

/** A new random secret as the text a secret file holds. */
export function newSecretText(): string {
  return randomBytes(MIN_SECRET_BYTES).toString('hex');
}
