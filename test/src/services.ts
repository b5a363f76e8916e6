import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { CacheStoreAuth, ProcessorAuth } from './credentials.js';
import { SYSTEM_PATH, nodeFlagsOf, waitForEvent } from './process.js';

export { getJson } from './auth-http.js';

const require = createRequire(import.meta.url);
const distOf = (pkg: string): string => path.dirname(require.resolve(pkg));

export const CACHE_STORE_CLI = path.join(distOf('@site-recovery/cache-store'), 'cli', 'sr-cache-store.js');
export const PROCESSOR_CLI = path.join(distOf('@site-recovery/processor'), 'cli', 'sr-processor.js');

export interface ServiceProcess {
  readonly child: ChildProcess;
  /** HOST:PORT the service listens on. */
  readonly listen: string;
  readonly ready: Record<string, unknown>;
  /** The token its HTTP routes take (`/status`), when it runs with authentication. */
  readonly tokenFile?: string;
  stderr(): string;
  /** SIGTERM and wait for exit. */
  stop(): Promise<number | null>;
  /** SIGKILL, as a crash. */
  kill(): Promise<void>;
}

/** Spawns a node CLI and waits for its `{"event":"ready"}` line. */
export async function startService(
  cli: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
  tokenFile?: string,
): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [...nodeFlagsOf(cli), cli, ...args], {
    env: { ...process.env, PATH: SYSTEM_PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 1 << 20) stderr = stderr.slice(-(1 << 19));
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = await waitForEvent(child, 'ready');
  return {
    child,
    listen: String(ready['listen'] ?? ready['nbd']),
    ready,
    ...(tokenFile !== undefined ? { tokenFile } : {}),
    stderr: () => stderr,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * Starts `sr-cache-store`. Without `auth` it runs `--insecure` (loopback only, no authentication): for
 * tests of something else that start it alone beside an in-process client that presents no token.
 */
export function startCacheStore(
  dataDir: string,
  listen = '127.0.0.1:0',
  auth: CacheStoreAuth = 'insecure',
  more: readonly string[] = [],
): Promise<ServiceProcess> {
  const args = ['--listen', listen, '--data-dir', dataDir, ...more];
  if (auth === 'insecure') return startService(CACHE_STORE_CLI, [...args, '--insecure']);
  args.push('--auth-secret-file', auth.secretFile);
  if (auth.revokedTokensFile !== undefined) args.push('--revoked-tokens-file', auth.revokedTokensFile);
  return startService(CACHE_STORE_CLI, args, {}, auth.statusTokenFile);
}

/** Starts `sr-processor`; without `auth` it runs `--insecure`, as {@link startCacheStore}. */
export function startProcessor(
  dataDir: string,
  cacheStoreUrl: string,
  listen = '127.0.0.1:0',
  args: readonly string[] = [],
  auth: ProcessorAuth = 'insecure',
): Promise<ServiceProcess> {
  const base = ['--listen', listen, '--cache-store', cacheStoreUrl, '--data-dir', dataDir, ...args];
  if (auth === 'insecure') return startService(PROCESSOR_CLI, [...base, '--insecure']);
  base.push('--auth-secret-file', auth.secretFile, '--cache-store-token-file', auth.cacheStoreTokenFile);
  if (auth.revokedTokensFile !== undefined) base.push('--revoked-tokens-file', auth.revokedTokensFile);
  return startService(PROCESSOR_CLI, base, {}, auth.operatorTokenFile);
}
