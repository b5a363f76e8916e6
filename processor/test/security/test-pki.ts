import { execFileSync } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';

/** A CA and a server certificate it signed for 127.0.0.1 and localhost, as PEM files. */
export interface TestPki {
  readonly caFile: string;
  readonly certFile: string;
  /** Mode 0600: the processor refuses a key others may read. */
  readonly keyFile: string;
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** Makes a CA and a server certificate in `dir` with the `openssl` command, as an operator would. */
export async function makePki(dir: string, name: string): Promise<TestPki> {
  await fsp.mkdir(dir, { recursive: true });
  const openssl = (args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  // P-256 keys: quick to make, and every TLS client takes them.
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', `/CN=${name} CA`]);
  openssl(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1']);
  await fsp.writeFile(
    path.join(dir, 'server.ext'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n',
  );
  openssl([
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    'server.ext',
    '-out',
    'server.crt',
  ]);
  const keyFile = path.join(dir, 'server.key');
  await fsp.chmod(keyFile, 0o600);
  const read = (f: string): Promise<Buffer> => fsp.readFile(path.join(dir, f));
  return {
    caFile: path.join(dir, 'ca.crt'),
    certFile: path.join(dir, 'server.crt'),
    keyFile,
    ca: await read('ca.crt'),
    cert: await read('server.crt'),
    key: await read('server.key'),
  };
}
