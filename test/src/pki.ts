import fsp from 'node:fs/promises';
import path from 'node:path';
import { runOk } from './process.js';

/** A CA and a server certificate it signed for 127.0.0.1 and localhost, as PEM files. */
export interface TestPki {
  readonly dir: string;
  /** The CA certificate: what a client's `--tls-ca` names. */
  readonly caFile: string;
  readonly certFile: string;
  /** Mode 0600: daemons refuse a key others may read. */
  readonly keyFile: string;
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/**
 * Makes a CA and a server certificate in `dir/name` with the `openssl` command, as an operator would.
 * Tests make their certificates at run time: nothing secret or expiring is committed.
 */
export async function makePki(dir: string, name: string): Promise<TestPki> {
  const home = path.join(dir, name);
  await fsp.mkdir(home, { recursive: true });
  const f = (x: string): string => path.join(home, x);
  // P-256 keys: quick to make, and every TLS client takes them.
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const days = ['-days', '2'];
  await runOk('openssl', [
    ...['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), ...days, '-subj', `/CN=${name} test CA`],
    ...['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
  ]);
  await runOk('openssl', ['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=127.0.0.1']);
  await fsp.writeFile(
    f('server.ext'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n',
  );
  await runOk('openssl', [
    ...['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial'],
    ...[...days, '-extfile', f('server.ext'), '-out', f('server.crt')],
  ]);
  await fsp.chmod(f('server.key'), 0o600);
  return {
    dir: home,
    caFile: f('ca.crt'),
    certFile: f('server.crt'),
    keyFile: f('server.key'),
    ca: await fsp.readFile(f('ca.crt')),
    cert: await fsp.readFile(f('server.crt')),
    key: await fsp.readFile(f('server.key')),
  };
}
