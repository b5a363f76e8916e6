import { spawn, type ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '@site-recovery/shared';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { FileReplicaStore } from '../src/replica/file-replica-store.js';
import { Processor, type ProcessorOptions, type ProcessorStatus } from '../src/processor.js';
import type { VmStatus } from '../src/stream/vm-replication.js';

export const MiB = 1 << 20;

export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `sr-${prefix}-`));
  return { dir, cleanup: () => fsp.rm(dir, { recursive: true, force: true }) };
}

/**
 * The lifecycle the processor's scenario tests share: one temp dir per file and a fresh data dir per
 * case; `closeCase` (stop what the case started) runs after each case. Returns the data-dir maker.
 */
export function useCaseDirs(name: string, closeCase: () => Promise<void>): () => string {
  let root: { dir: string; cleanup: () => Promise<void> } | undefined;
  let n = 0;
  beforeAll(async () => {
    root = await tempDir(name);
  });
  afterEach(closeCase);
  afterAll(async () => {
    await root?.cleanup();
  });
  return () => path.join(root!.dir, `case-${++n}`);
}

/** A processor in this process, fast rounds and retries so tests do not wait. */
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

/** Polls `probe` until it returns a value (not undefined) or time runs out. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 10));
  }
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

/** A `ws://` address nothing listens on (a port that was free a moment ago). */
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

/** Every file and directory under `dir`, relative, sorted. */
export async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      out.push(path.relative(dir, p) + (e.isDirectory() ? '/' : ''));
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out.sort();
}
