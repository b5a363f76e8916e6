import fsp from 'node:fs/promises';
import path from 'node:path';
import { issueToken, newSecretText, type TokenClaims } from '@site-recovery/shared';
import { runOk } from '@site-recovery/test';

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

export interface TestCa {
  /** PEM of the CA certificate (what `--tls-ca` names). */
  readonly caFile: string;
  /** A server certificate signed by this CA, for 127.0.0.1 and localhost, and its key (0600). */
  readonly certFile: string;
  readonly keyFile: string;
}

/** A CA and a server certificate it signed, made with the openssl command into `dir/<name>-*`. */
export async function makeCa(dir: string, name: string): Promise<TestCa> {
  const f = (x: string): string => path.join(dir, `${name}-${x}`);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await runOk('openssl', [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
    '-days',
    '2',
    '-subj',
    `/CN=${name} test CA`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await runOk('openssl', ['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=127.0.0.1']);
  await fsp.writeFile(
    f('server.ext'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n',
  );
  await runOk('openssl', [
    'x509',
    '-req',
    '-in',
    f('server.csr'),
    '-CA',
    f('ca.pem'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    f('server.ext'),
    '-out',
    f('server.pem'),
  ]);
  await fsp.chmod(f('server.key'), 0o600);
  return { caFile: f('ca.pem'), certFile: f('server.pem'), keyFile: f('server.key') };
}
