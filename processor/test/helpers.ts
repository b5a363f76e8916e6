import { spawn, type ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger, type DiskInfo } from '@site-recovery/shared';
import { tempDir, waitUntil } from '@site-recovery/test';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { FileReplicaStore } from '../src/replica/file-replica-store.js';
import type { ReplicaStore } from '../src/replica/replica-store.js';
import { Processor, type ProcessorOptions, type ProcessorStatus } from '../src/processor.js';
import type { VmStatus } from '../src/stream/vm-replication.js';

export { listTree, tempDir } from '@site-recovery/test';

export const MiB = 1 << 20;

/**
 * The lifecycle the processor's scenario tests share: one temp dir per file and a fresh data dir per
 * case; `closeCase` (stop what the case started), if given, runs after each case. Returns the data-dir maker.
 */
export function useCaseDirs(name: string, closeCase?: () => Promise<void>): () => string {
  let root: { dir: string; cleanup: () => Promise<void> } | undefined;
  let n = 0;
  beforeAll(async () => {
    root = await tempDir(name);
  });
  if (closeCase !== undefined) afterEach(closeCase);
  afterAll(async () => {
    await root?.cleanup();
  });
  return () => path.join(root!.dir, `case-${++n}`);
}

/**
 * A processor in this process, fast rounds and retries so tests do not wait. `store` is its data dir
 * (a file store there) or a store of the test's own.
 */
export function startProcessor(
  store: string | ReplicaStore,
  cacheStoreUrl: string,
  options: ProcessorOptions = {},
): Promise<Processor> {
  return Processor.start({
    store: typeof store === 'string' ? new FileReplicaStore(store) : store,
    cacheStoreUrl,
    listenHost: '127.0.0.1',
    listenPort: 0,
    log: createLogger('test-processor', process.env['SR_LOG_LEVEL'] ?? 'silent'),
    options: { confirmIntervalMs: 20, backoff: { initialDelayMs: 10, maxDelayMs: 100 }, ...options },
  });
}

export async function getJson<T>(listen: string, urlPath: string): Promise<T> {
  const res = await fetch(`http://${listen}${urlPath}`);
  if (!res.ok) throw new Error(`GET ${urlPath}: ${res.status}`);
  return (await res.json()) as T;
}

export function getStatus(listen: string): Promise<ProcessorStatus> {
  return getJson<ProcessorStatus>(listen, '/status');
}

export async function vmStatus(listen: string, vm: string): Promise<VmStatus> {
  const s = await getStatus(listen);
  const v = s.vms.find((x) => x.vm === vm);
  if (v === undefined) throw new Error(`status lists no VM ${vm}: ${JSON.stringify(s)}`);
  return v;
}

/** {@link waitUntil} at the pace of a processor in this process: polls every 10 ms, for 10 s unless told. */
export function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 10_000,
): Promise<T> {
  return waitUntil(what, probe, timeoutMs, 10);
}

/**
 * A replica of `vm` as a finished initial copy leaves it (nothing written yet), so recovery points can
 * be cut from it at once without a cache-store.
 */
export async function readyReplica(dataDir: string, vm: string, disks: readonly DiskInfo[]): Promise<void> {
  const replica = await new FileReplicaStore(dataDir).create(vm, 'g1', disks);
  await replica.savePosition({ appliedLsn: 0, initialSync: { state: 'done', done: 0, total: 0 } });
  await replica.close();
}

export function replicaFile(dataDir: string, vm: string, disk: string): string {
  return path.join(dataDir, 'replicas', vm, 'disks', `${disk}.img`);
}

export function stateFile(dataDir: string, vm: string): string {
  return path.join(dataDir, 'replicas', vm, 'state.json');
}

export async function readState(
  dataDir: string,
  vm: string,
): Promise<{
  generation: string;
  appliedLsn: number;
  initialSync: { state: string; done: number; total: number };
  disks: { id: string; size: number }[];
}> {
  return JSON.parse(await fsp.readFile(stateFile(dataDir, vm), 'utf8')) as never;
}

/** Index of the first differing byte, -1 when equal. */
export function firstDiff(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/** A `ws://` address on a loopback port nothing listens on (bound once to find it, then released). */
export async function deadUrl(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `ws://127.0.0.1:${port}/`;
}

/** The built CLI (tests run after `tsc -b`). */
export const PROCESSOR_CLI = fileURLToPath(new URL('../dist/cli/sr-processor.js', import.meta.url));

export interface CliProcess {
  readonly child: ChildProcess;
  readonly listen: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
}

/**
 * `sr-processor` arguments for a test: its data dir and cache-store, fast rounds and retries, then `more`.
 * `--insecure`: these tests run the processor alone on loopback against an in-process cache-store that
 * checks no tokens, and are about applying and crashing, not credentials (processor/test/security and
 * test/scenarios run it with them).
 */
export function cliArgs(cacheStoreUrl: string, dataDir: string, ...more: string[]): string[] {
  return [
    '--insecure',
    '--listen',
    '127.0.0.1:0',
    '--cache-store',
    cacheStoreUrl,
    '--data-dir',
    dataDir,
    '--confirm-interval-ms',
    '50',
    '--reconnect-initial-ms',
    '20',
    '--reconnect-max-ms',
    '200',
    ...more,
  ];
}

/** Starts `sr-processor` and waits for its ready line. */
export async function startCli(args: readonly string[], timeoutMs = 20_000): Promise<CliProcess> {
  const child = spawn(process.execPath, [PROCESSOR_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no ready line within ${timeoutMs} ms; stderr: ${stderr.slice(-2000)}`)),
      timeoutMs,
    );
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      const line = stdout.split('\n').find((l) => l.includes('"event":"ready"'));
      if (line !== undefined) {
        clearTimeout(timer);
        resolve(JSON.parse(line) as Record<string, unknown>);
      }
    });
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`sr-processor exited (${code}) before it was ready; stderr: ${stderr.slice(-2000)}`));
    });
  });
  return { child, listen: String(ready['listen']), exited, stderr: () => stderr };
}

/** Runs the CLI to completion. */
export function runCli(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [PROCESSOR_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export async function replicaBytes(dataDir: string, vm: string, disks: readonly { id: string }[]): Promise<Buffer[]> {
  return Promise.all(disks.map((d) => fsp.readFile(replicaFile(dataDir, vm, d.id))));
}

/** Every replica disk equals its expected image (the failure names the first differing byte). */
export function expectImages(actual: Buffer[], expected: Buffer[]): void {
  expect(actual.map((a, i) => firstDiff(a, expected[i]!))).toEqual(expected.map(() => -1));
}

/** One control API call: status and parsed JSON body (errors are `{code, message}`). */
export async function api<T = unknown>(
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
