import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { SYSTEM_PATH, nodeFlagsOf, waitForEvent } from './process.js';

const require = createRequire(import.meta.url);
/** The built CLI of the agent workspace. */
export const AGENT_CLI = path.join(path.dirname(require.resolve('@site-recovery/agent')), 'cli', 'sr-agent.js');
export const JOURNAL_CLI = path.join(path.dirname(require.resolve('@site-recovery/agent')), 'cli', 'sr-journal.js');

export interface AgentProcess {
  readonly child: ChildProcess;
  readonly host: string;
  readonly port: number;
  /** The agent's ready line (status address, generation, ...). */
  readonly ready: Record<string, unknown>;
  /** nbd:// URI of one disk's export. */
  uri(diskId: string): string;
  /** Current stderr (pino JSON lines). */
  stderr(): string;
  /** SIGTERM and wait for a clean exit; resolves to the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL, as a crash. */
  kill(): Promise<void>;
}

export interface StartAgentOptions {
  readonly vm: string;
  readonly disks: readonly { id: string; path: string }[];
  readonly dataDir: string;
  /** `--token-file`: the VM's agent token, for an agent given `--cache-store` in `args`. */
  readonly tokenFile?: string;
  readonly args?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /** false: no `--nbd` (a watch-mode agent opens no NBD listener; `host`/`port` are then empty). Default true. */
  readonly nbd?: boolean;
}

/** Starts `sr-agent` on a free loopback port and waits for its ready line. */
export async function startAgent(o: StartAgentOptions): Promise<AgentProcess> {
  const args = [
    ...nodeFlagsOf(AGENT_CLI),
    AGENT_CLI,
    '--vm',
    o.vm,
    ...o.disks.flatMap((d) => ['--disk', `${d.id}=${d.path}`]),
    ...(o.nbd === false ? [] : ['--nbd', '127.0.0.1:0']),
    '--data-dir',
    o.dataDir,
    ...(o.tokenFile !== undefined ? ['--token-file', o.tokenFile] : []),
    ...(o.args ?? []),
  ];
  const child = spawn(process.execPath, args, {
    env: { ...process.env, PATH: SYSTEM_PATH, ...o.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = await waitForEvent(child, 'ready');
  const nbd = ready['nbd'];
  const [host, port] = typeof nbd === 'string' ? (nbd.split(/:(?=\d+$)/) as [string, string]) : ['', '0'];
  return {
    child,
    host,
    port: Number(port),
    ready,
    uri: (id) => `nbd://${host}:${port}/${id}`,
    stderr: () => stderr,
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}
