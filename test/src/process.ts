import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly input?: string | Buffer;
  /** Kill the command after this long. Default 120 s. */
  readonly timeoutMs?: number;
  readonly cwd?: string;
}

/** Debian's nbdsh needs Debian's python3 first on PATH (DESIGN.md). */
/**
 * The node flags a CLI's first line asks for (`#!/usr/bin/env -S node FLAGS`), so a process the
 * tests start with `process.execPath` runs as it does when started through its bin.
 */
export function nodeFlagsOf(script: string): string[] {
  const first = fs.readFileSync(script, 'utf8').split('\n', 1)[0] ?? '';
  const m = /^#!\S*env -S node(.*)$/.exec(first);
  return m === null
    ? []
    : m[1]!
        .trim()
        .split(/\s+/)
        .filter((x) => x.length > 0);
}

export const SYSTEM_PATH = `/usr/sbin:/usr/bin:/sbin:/bin:${process.env['PATH'] ?? ''}`;

/** Runs a command to completion and collects its output; never throws on a non-zero exit. */
export function run(cmd: string, args: readonly string[], o: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: { ...process.env, PATH: SYSTEM_PATH, ...o.env },
      cwd: o.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 120_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.end(o.input);
  });
}

/** Like {@link run} but rejects with the command's output when it exits non-zero. */
export async function runOk(cmd: string, args: readonly string[], o: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, o);
  if (r.code !== 0) {
    throw new Error(
      `${cmd} ${args.join(' ')} exited ${r.code ?? r.signal}\nstdout: ${r.stdout.slice(-4000)}\nstderr: ${r.stderr.slice(-4000)}`,
    );
  }
  return r;
}

/** Resolves with the first stdout line that parses as JSON with the given `event`, or rejects on exit. */
export function waitForEvent(child: ChildProcess, event: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf = '';
    let stderr = '';
    const timer = setTimeout(
      () => fail(new Error(`no "${event}" line within ${timeoutMs} ms; stderr: ${stderr.slice(-2000)}`)),
      timeoutMs,
    );
    const onErr = (d: Buffer): void => {
      stderr += d.toString();
    };
    const onData = (d: Buffer): void => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const obj = JSON.parse(line) as Record<string, unknown>;
          if (obj['event'] === event) {
            cleanup();
            resolve(obj);
            return;
          }
        } catch {
          // not a JSON line
        }
      }
    };
    const onExit = (code: number | null): void =>
      fail(new Error(`process exited (${code}) before "${event}"; stderr: ${stderr.slice(-2000)}`));
    function cleanup(): void {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onErr);
      child.off('exit', onExit);
    }
    function fail(err: Error): void {
      cleanup();
      reject(err);
    }
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onErr);
    child.once('exit', onExit);
  });
}
