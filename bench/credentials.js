// The credentials a bench run starts the daemons with. AUTH=1: secrets and tokens made with `sr` as an
// operator makes them (docs/security.md); TLS=1: a CA and a server certificate for 127.0.0.1 made with
// openssl at run time (the test harness's makePki), the links wss:// and the control API https://. Without either, every daemon
// runs --insecure (authentication off, loopback only), as the benchmark ran before authentication.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { URL } from 'node:url';
import { authHeaders, loadTokenFile } from '@site-recovery/shared';
import { makePki } from '@site-recovery/test';
import { ROOT } from './lib.js';

const SR_CLI = path.join(ROOT, 'processor/dist/cli/sr.js');
const sr = (...args) => execFileSync(process.execPath, [SR_CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });

/**
 * Makes what `{auth, tls}` asks for in `dir` (which must be empty) and returns the daemons' extra
 * arguments, the URL schemes, and a JSON GET that proves a token and verifies the CA as the clients do.
 */
export async function benchCredentials(dir, { auth, tls }) {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = (name) => path.join(dir, name);
  const pki = tls ? await makePki(dir, 'pki') : undefined;
  const tlsServer = pki ? ['--tls-cert', pki.certFile, '--tls-key', pki.keyFile] : [];
  const tlsClient = pki ? ['--tls-ca', pki.caFile] : [];
  let cacheStore = ['--insecure'];
  let processor = ['--insecure'];
  let agentToken = () => ['--insecure'];
  let operatorToken;
  if (auth) {
    sr('secret', 'new', '--out', f('cache-store.secret'));
    sr('secret', 'new', '--out', f('processor.secret'));
    sr(
      'token',
      'issue',
      '--secret-file',
      f('cache-store.secret'),
      '--role',
      'processor',
      '--out',
      f('processor.token'),
    );
    sr('token', 'issue', '--secret-file', f('processor.secret'), '--role', 'operator', '--out', f('operator.token'));
    cacheStore = ['--auth-secret-file', f('cache-store.secret')];
    processor = ['--auth-secret-file', f('processor.secret'), '--cache-store-token-file', f('processor.token')];
    agentToken = (vm) => {
      const file = f(`agent-${vm}.token`);
      if (!fs.existsSync(file))
        sr('token', 'issue', '--secret-file', f('cache-store.secret'), '--vm', vm, '--out', file);
      return ['--token-file', file];
    };
    operatorToken = loadTokenFile(f('operator.token'));
  }
  const ca = pki?.ca;
  return {
    label: [auth ? 'auth' : '', tls ? 'tls' : ''].filter(Boolean).join('+') || 'insecure',
    ws: tls ? 'wss' : 'ws',
    http: tls ? 'https' : 'http',
    cacheStoreArgs: [...cacheStore, ...tlsServer],
    /** The control API is served over https too when TLS is on. */
    processorArgs: [...processor, ...tlsClient, ...tlsServer],
    agentArgs: (vm) => [...agentToken(vm), ...tlsClient],
    /** `sr` global options: the operator token and the CA. */
    srArgs: [...(auth ? ['--token-file', f('operator.token')] : []), ...tlsClient],
    /** GET a JSON document; `operator` proves the operator token (the processor's control API). */
    getJson: (url, { operator = false } = {}) =>
      new Promise((resolve, reject) => {
        const u = new URL(url);
        const headers = operator && operatorToken ? authHeaders(operatorToken, u) : {};
        const req = (u.protocol === 'https:' ? https : http).get(u, { headers, ...(ca ? { ca } : {}) }, (res) => {
          let body = '';
          res.setEncoding('utf8').on('data', (d) => (body += d));
          res.on('end', () =>
            res.statusCode === 200
              ? resolve(JSON.parse(body))
              : reject(new Error(`GET ${url}: ${res.statusCode} ${body}`)),
          );
        });
        req.on('error', reject);
      }),
  };
}
