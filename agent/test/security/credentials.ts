import fsp from 'node:fs/promises';
import path from 'node:path';
import { issueToken, newSecretText, type TokenClaims } from '@site-recovery/shared';

/** A cache-store secret as `sr secret new --out FILE` writes it (0600); returns the file and its bytes. */
export async function writeSecret(dir: string, name = 'cache-store.secret'): Promise<{ file: string; secret: Buffer }> {
  const text = newSecretText();
  const file = path.join(dir, name);
  await fsp.writeFile(file, text + '\n', { mode: 0o600 });
  return { file, secret: Buffer.from(text, 'hex') };
}

/**
 * A token file as `sr token issue --secret-file ... --out FILE` writes it (0600 unless `mode` says
 * otherwise). Valid for a day from now unless `claims` says otherwise.
 */
export async function writeToken(
  dir: string,
  secret: Buffer,
  claims: Partial<TokenClaims> & Pick<TokenClaims, 'id' | 'role'>,
  mode = 0o600,
): Promise<{ file: string; text: string }> {
  const now = Math.floor(Date.now() / 1000);
  const text = issueToken(secret, { issuedAt: now, expiresAt: now + 86_400, ...claims });
  const file = path.join(dir, `${claims.id}.token`);
  await fsp.writeFile(file, text + '\n', { mode });
  // The umask may have narrowed the mode asked for; a test that wants a readable file must get one.
  await fsp.chmod(file, mode);
  return { file, text };
}
