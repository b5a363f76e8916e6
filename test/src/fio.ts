import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SYSTEM_PATH, type RunOptions, type RunResult } from './process.js';

// fio writes files of its own into its working directory (`--verify` leaves `<job>-<n>-verify.state`
// behind), so every fio the tests start runs in a directory of its own that goes away with it: nothing
// lands in the checkout, and two fio runs at once never share a state file.

export interface FioRun {
  /** Resolves when fio has exited and its working directory is gone. */
  readonly done: Promise<RunResult>;
  /**
   * SIGINT: fio stops its jobs, still prints its report (e.g. the `--output-format=json` document with
   * each job's `error`), and exits with status 128 or higher.
   */
  interrupt(): void;
}

/** Starts fio with `args` in a fresh temporary working directory. `timeoutMs` (default 120 s) kills it. */
export function startFio(args: readonly string[], o: Omit<RunOptions, 'cwd' | 'input'> = {}): FioRun {
  let child: ReturnType<typeof spawn> | undefined;
  let interrupted = false;
  const done = (async (): Promise<RunResult> => {
    const cwd = await fsp.mkdtemp(path.join(os.tmpdir(), 'sr-fio-'));
    try {
      return await new Promise<RunResult>((resolve, reject) => {
        const c = spawn('fio', args, {
          env: { ...process.env, PATH: SYSTEM_PATH, ...o.env },
          cwd,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        child = c;
        if (interrupted) c.kill('SIGINT');
        let stdout = '';
        let stderr = '';
        c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
        c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-(1 << 20))));
        const timer = setTimeout(() => c.kill('SIGKILL'), o.timeoutMs ?? 120_000);
        c.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        c.on('close', (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal, stdout, stderr });
        });
      });
    } finally {
      await fsp.rm(cwd, { recursive: true, force: true });
    }
  })();
  return {
    done,
    interrupt: () => {
      interrupted = true;
      child?.kill('SIGINT');
    },
  };
}

/** Runs fio to completion in a fresh temporary working directory; never throws on a non-zero exit. */
export function runFio(args: readonly string[], o: Omit<RunOptions, 'cwd' | 'input'> = {}): Promise<RunResult> {
  return startFio(args, o).done;
}

/** Like {@link runFio} but rejects with fio's output when it exits non-zero. */
export async function runFioOk(args: readonly string[], o: Omit<RunOptions, 'cwd' | 'input'> = {}): Promise<RunResult> {
  const r = await runFio(args, o);
  if (r.code !== 0) {
    throw new Error(
      `fio ${args.join(' ')} exited ${r.code ?? r.signal}\nstdout: ${r.stdout.slice(-4000)}\nstderr: ${r.stderr.slice(-4000)}`,
    );
  }
  return r;
}

/** One job's figures from fio's `--output-format=json` report. */
export interface FioJobReport {
  readonly jobname: string;
  /** fio's error number for the job; 0 when every I/O succeeded. */
  readonly error: number;
  readonly write: { readonly io_bytes: number; readonly total_ios: number };
}

/** The jobs of a `--output-format=json` report (fio may print notices before the document). */
export function fioJobs(stdout: string): FioJobReport[] {
  const at = stdout.indexOf('{');
  if (at < 0) throw new Error(`fio printed no JSON report: ${stdout.slice(0, 2000)}`);
  return (JSON.parse(stdout.slice(at)) as { jobs: FioJobReport[] }).jobs;
}
