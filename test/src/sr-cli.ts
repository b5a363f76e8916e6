import { createRequire } from 'node:module';
import path from 'node:path';
import { run, type RunResult } from './process.js';

const require = createRequire(import.meta.url);
/** The built `sr` CLI of the processor workspace. */
export const SR_CLI = path.join(path.dirname(require.resolve('@site-recovery/processor')), 'cli', 'sr.js');

/** A processor as `sr` reaches it: HOST:PORT, or a started processor whose operator token `sr` presents. */
export type SrTarget = string | { readonly listen: string; readonly tokenFile?: string };

/**
 * Runs `sr --processor http://LISTEN [--token-file FILE] ARGS...`; never throws on a non-zero exit
 * (SIGKILL after `timeoutMs`).
 */
export function runSr(processor: SrTarget, args: readonly string[], timeoutMs = 120_000): Promise<RunResult> {
  const p = typeof processor === 'string' ? { listen: processor } : processor;
  const token = p.tokenFile !== undefined ? ['--token-file', p.tokenFile] : [];
  return run(process.execPath, [SR_CLI, '--processor', `http://${p.listen}`, ...token, ...args], { timeoutMs });
}

/** Runs an `sr` command that must succeed and print JSON (`--json` is appended); returns the parsed document. */
export async function srJson<T>(processor: SrTarget, args: readonly string[], timeoutMs = 120_000): Promise<T> {
  const r = await runSr(processor, [...args, '--json'], timeoutMs);
  if (r.code !== 0) throw new Error(`sr ${args.join(' ')} ${outcome(r, timeoutMs)}: ${r.stderr.trim()}`);
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`sr ${args.join(' ')} printed something other than JSON: ${r.stdout.slice(0, 2000)}`);
  }
}

/** Runs an `sr` command that must succeed; returns its output. */
export async function srOk(processor: SrTarget, args: readonly string[], timeoutMs = 120_000): Promise<RunResult> {
  const r = await runSr(processor, args, timeoutMs);
  if (r.code !== 0) throw new Error(`sr ${args.join(' ')} ${outcome(r, timeoutMs)}: ${r.stderr.trim()}`);
  return r;
}

function outcome(r: RunResult, timeoutMs: number): string {
  return r.signal === 'SIGKILL' ? `did not finish within ${timeoutMs} ms` : `exited ${r.code ?? r.signal}`;
}

/** The control API's documents as the scenarios read them (the contract in processor/README.md). */
export interface SrPoint {
  id: string;
  time: string;
  lsn: number;
  kind: 'crash' | 'app' | 'multi-vm';
  undoBytes: number;
}

export interface SrManifest {
  vm: string;
  kind: 'failover' | 'test-failover';
  point: { id: string; time: string; lsn: number; kind: string };
  createdAt: string;
  target: { resourceGroup: string; network: string; subnet: string; ip: string; availabilitySet: string | null };
  disks: { id: string; size: number; path: string }[];
}
