// Shared helpers of the benchmark scripts: process control, fio runs, medians.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

// The test harness's helper, so bench and tests start the CLIs the same way.
export { nodeFlagsOf } from '@site-recovery/test';

export const ROOT = path.resolve(import.meta.dirname, '..');

/** Directory the benchmark images live in: SR_BENCH_DIR, else .tmp/bench in the project (a real disk). */
export function benchDir(name) {
  const dir = path.join(process.env.SR_BENCH_DIR ?? path.join(ROOT, '.tmp', 'bench'), name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Starts a server process and waits until its TCP port accepts connections. */
export async function startServer(cmd, args, port, env = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  for (let i = 0; i < 200; i++) {
    try {
      execFileSync('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/d0`], { stdio: 'ignore' });
      return { child, stop: async () => (child.kill('SIGTERM'), await exited), stderr: () => stderr };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  child.kill('SIGKILL');
  throw new Error(`${cmd} did not start: ${stderr}`);
}

/** Runs one fio job against an NBD URI; returns { iops, mbps }. */
export function fio(uri, job) {
  const args = [
    '--output-format=json',
    '--name=bench',
    '--ioengine=nbd',
    `--uri=${uri}`,
    '--time_based',
    '--group_reporting',
    '--end_fsync=1',
    ...job,
  ];
  const out = inScratchDir((cwd) => execFileSync('fio', args, { encoding: 'utf8', maxBuffer: 64 << 20, cwd }));
  const w = JSON.parse(out.slice(out.indexOf('{'))).jobs[0].write;
  return { iops: w.iops, mbps: w.bw_bytes / 1e6 };
}

/**
 * Runs `fn(dir)` with a fresh temporary directory and removes it afterwards (also when `fn` is async).
 * fio runs there: it leaves files of its own (a `--verify` state file) in its working directory.
 */
export function inScratchDir(fn) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sr-bench-'));
  const remove = () => fs.rmSync(dir, { recursive: true, force: true });
  let out;
  try {
    out = fn(dir);
  } catch (err) {
    remove();
    throw err;
  }
  if (out instanceof Promise) return out.finally(remove);
  remove();
  return out;
}

/** A loopback port that was free a moment ago (the OS picks it). */
export function freePort() {
  const server = net.createServer().listen(0, '127.0.0.1');
  return new Promise((resolve) =>
    server.once('listening', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    }),
  );
}

/**
 * Writes back and drops the page cache when this runs as root, so each run starts from the same memory
 * state: freeing the gigabytes a previous run left behind happens before the clock starts, not inside it.
 * Returns whether it could.
 */
export function dropCaches() {
  try {
    execFileSync('sync');
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}
