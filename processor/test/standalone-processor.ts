import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createLogger, type DiskInfo } from '@site-recovery/shared';
import { FileReplicaStore } from '../src/replica/file-replica-store.js';
import { Processor, type ProcessorOptions } from '../src/processor.js';

// A processor in this process on its own data dir, with replicas made beforehand: what the failover
// path and health tests need when the cache-store's part is absent (or scripted by the test).

export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `sr-${prefix}-`));
  return { dir, cleanup: () => fsp.rm(dir, { recursive: true, force: true }) };
}

/** A ws:// URL on a loopback port nothing listens on (bound once to find it, then released). */
export async function closedPortUrl(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `ws://127.0.0.1:${port}/`;
}

export function startProcessor(
  dataDir: string,
  cacheStoreUrl: string,
  options: ProcessorOptions = {},
): Promise<Processor> {
  return Processor.start({
    store: new FileReplicaStore(dataDir),
    cacheStoreUrl,
    listenHost: '127.0.0.1',
    listenPort: 0,
    log: createLogger('test-processor', process.env['SR_LOG_LEVEL'] ?? 'silent'),
    options: { confirmIntervalMs: 20, backoff: { initialDelayMs: 10, maxDelayMs: 100 }, ...options },
  });
}

/**
 * A replica of `vm` as a finished initial copy leaves it (nothing written yet), so recovery points can
 * be cut from it at once.
 */
export async function readyReplica(dataDir: string, vm: string, disks: readonly DiskInfo[]): Promise<void> {
  const replica = await new FileReplicaStore(dataDir).create(vm, 'g1', disks);
  await replica.savePosition({ appliedLsn: 0, initialSync: { state: 'done', done: 0, total: 0 } });
  await replica.close();
}

/** One HTTP request to the processor's listener: status and parsed JSON body. */
export async function request<T = unknown>(
  listen: string,
  method: string,
  urlPath: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const res = await fetch(`http://${listen}${urlPath}`, {
    method,
    ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}),
  });
  return { status: res.status, body: (await res.json()) as T };
}

/**
 * Polls `probe` until it returns something other than undefined; past the deadline the failure says
 * what never happened and what the probe saw last.
 */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 20_000,
  last: () => unknown = () => undefined,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline)
      throw new Error(`${what} did not happen within ${timeoutMs} ms; last seen: ${JSON.stringify(last())}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
