import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { SYSTEM_PATH, nodeFlagsOf, waitForEvent } from './process.js';

const require = createRequire(import.meta.url);
const distOf = (pkg: string): string => path.dirname(require.resolve(pkg));

export const CACHE_STORE_CLI = path.join(distOf('@site-recovery/cache-store'), 'cli', 'sr-cache-store.js');
export const PROCESSOR_CLI = path.join(distOf('@site-recovery/processor'), 'cli', 'sr-processor.js');

export interface ServiceProcess {
  readonly child: ChildProcess;
  /** HOST:PORT the service listens on. */
  readonly listen: string;
  readonly ready: Record<string, unknown>;
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

export function startCacheStore(dataDir: string, listen = '127.0.0.1:0'): Promise<ServiceProcess> {
  return startService(CACHE_STORE_CLI, ['--listen', listen, '--data-dir', dataDir]);
}

export function startProcessor(
  dataDir: string,
  cacheStoreUrl: string,
  listen = '127.0.0.1:0',
  args: readonly string[] = [],
): Promise<ServiceProcess> {
  return startService(PROCESSOR_CLI, [
    '--listen',
    listen,
    '--cache-store',
    cacheStoreUrl,
    '--data-dir',
    dataDir,
    ...args,
  ]);
}

/** GET a JSON document over HTTP. */
export async function getJson(url: string): Promise<unknown> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  return res.json();
}
