import fsp from 'node:fs/promises';
import path from 'node:path';
import { startAgent, type AgentProcess } from './agent-process.js';
import { getJson } from './auth-http.js';
import { Credentials } from './credentials.js';
import { makeImage, tempDir, firstDifference } from './files.js';
import { startCacheStore, startProcessor, type ServiceProcess } from './services.js';
import { waitUntil } from './wait-until.js';

interface AgentStatusDoc {
  lsn: number;
  checkpointLsn: number;
  connections: number;
  journal: { bytes: number; maxBytes: number; stalled: boolean };
  /** VM writes that waited at the journal's cap since the agent started. */
  stalledWrites: number;
  /** Bitmap mode past the journal's cap (agent/src/bitmap/); absent on an agent without a generation. */
  mode?: {
    state: 'streaming' | 'bitmap' | 'resyncing' | 'watch';
    since: string;
    dirtyBytes: number;
    entered: number;
    resync?: { startLsn: number; resyncedBytes: number; totalBytes: number; percent: number };
    lastResync?: { startLsn: number; endLsn: number; endedAt: string };
  };
  replication?: {
    generation: string;
    /** `sentLsn` past `ackedLsn`: records on their way to the cache-store, not yet acknowledged. */
    stream: {
      ackedLsn: number;
      sentLsn: number;
      inFlightBytes: number;
      state: string;
      lastError?: string;
      /** `--max-bandwidth` (0: none) and whether sending waits on it now. */
      bandwidth: { limitBytesPerSecond: number; burstBytes: number; held: boolean; heldMs: number };
    };
    initialCopy: { state: string; percent: number };
  };
  /** Which generation streams, when and why it began, and the ones before (agent/README.md). */
  generation?: {
    id?: string;
    cause?: string;
    message?: string;
    previous: { id: string; cause: string; message: string }[];
    pending?: { cause: string; message: string; attempts: number };
  };
}

interface ProcessorVmDoc {
  vm: string;
  /** The generation its replica holds; null before it has one. */
  generation: string | null;
  appliedLsn: number;
  /** Applied and fsynced; `confirmedLsn` is what the cache-store was told of it. */
  durableLsn: number;
  confirmedLsn: number;
  /** The cache-store's newest LSN as the processor last heard it; null before it has. */
  cacheStoreLastLsn: number | null;
  pendingRecords: number;
  disks: { id: string; size: number; path: string }[];
  initialSync?: { state: string; percent: number };
  /** While the regions an agent wrote in bitmap mode are resynced. */
  resync?: { remaining: number; total: number; percent: number };
  state?: string;
  error?: string;
}

/** One VM's row of the cache-store's `GET /status`. */
interface CacheStoreVmDoc {
  vm: string;
  generation: string;
  /** Stored and fsynced (what the agent may have been acknowledged). */
  durableLsn: number;
  /** What the processor confirmed as applied. */
  appliedLsn: number;
  agentConnected: boolean;
  processorSubscribed: boolean;
}

/** How an env's agent starts: another cache-store URL (a proxy), more arguments, no NBD listener (watch mode). */
export interface AgentStartOptions {
  readonly cacheStoreUrl?: string;
  readonly args?: string[];
  readonly nbd?: boolean;
}

export interface ProtectedVm {
  readonly name: string;
  readonly disks: { id: string; path: string }[];
  agent: AgentProcess;
  statusUrl: string;
  dataDir: string;
}

/**
 * A whole replication path on loopback: one cache-store, one processor, and agents added per VM.
 * Every process is real and every port is chosen at run time. Authentication is on as a user would
 * set it up (`sr secret new`, `sr token issue`): each daemon checks tokens signed with its secret,
 * each agent holds its VM's token, and the env's own status reads and `sr` calls present tokens too.
 */
export class ReplicationEnv {
  cacheStore!: ServiceProcess;
  processor!: ServiceProcess;
  readonly vms = new Map<string, ProtectedVm>();
  private readonly processorArgs: string[] = [];
  private cacheStoreDir: string;
  private readonly cacheStoreArgs: string[] = [];

  private constructor(
    readonly dir: string,
    readonly credentials: Credentials,
    private readonly cleanupDir: () => Promise<void>,
  ) {
    this.cacheStoreDir = path.join(dir, 'cache-store');
  }

  /**
   * `region`: target-region defaults for the processor (`--region`), written to a file in the env's dir.
   * `cacheStore`: where the cache-store keeps its data (a small file system, say) and more of its options.
   */
  static async start(
    name: string,
    options: { region?: object; cacheStore?: { dataDir?: string; args?: readonly string[] } } = {},
  ): Promise<ReplicationEnv> {
    const t = await tempDir(name);
    const env = new ReplicationEnv(t.dir, await Credentials.create(path.join(t.dir, 'credentials')), t.cleanup);
    if (options.cacheStore?.dataDir !== undefined) env.cacheStoreDir = options.cacheStore.dataDir;
    env.cacheStoreArgs.push(...(options.cacheStore?.args ?? []));
    if (options.region !== undefined) {
      const file = path.join(t.dir, 'region.json');
      await fsp.writeFile(file, JSON.stringify(options.region));
      env.processorArgs.push('--region', file);
    }
    await env.startCacheStore();
    await env.startProcessor();
    return env;
  }

  /** (Re)starts the cache-store on its data dir, at `listen` (a restart after a kill keeps the address). */
  async startCacheStore(listen = '127.0.0.1:0'): Promise<ServiceProcess> {
    const auth = this.credentials.cacheStoreAuth();
    this.cacheStore = await startCacheStore(this.cacheStoreDir, listen, auth, this.cacheStoreArgs);
    return this.cacheStore;
  }

  /** (Re)starts the processor on its data dir, at `listen`. */
  async startProcessor(listen = '127.0.0.1:0'): Promise<ServiceProcess> {
    const dataDir = path.join(this.dir, 'processor');
    const auth = this.credentials.processorAuth();
    this.processor = await startProcessor(dataDir, this.cacheStoreUrl, listen, this.processorArgs, auth);
    return this.processor;
  }

  get cacheStoreUrl(): string {
    return `ws://${this.cacheStore.listen}`;
  }

  /** Starts an agent for a VM whose disks are created here (sparse, with optional random extents). */
  async protect(
    name: string,
    disks: { id: string; size: number; extents?: { offset: number; length: number }[] }[],
    options: AgentStartOptions = {},
  ): Promise<ProtectedVm> {
    const files = [];
    for (const d of disks) {
      const file = path.join(this.dir, `${name}-${d.id}.img`);
      await makeImage(file, d.size, d.extents ?? []);
      files.push({ id: d.id, path: file });
    }
    const vm: ProtectedVm = {
      name,
      disks: files,
      dataDir: path.join(this.dir, `${name}-agent`),
      agent: undefined as unknown as AgentProcess,
      statusUrl: '',
    };
    await this.startAgentFor(vm, options);
    this.vms.set(name, vm);
    // The agent is ready before its HELLO has reached the processor through the cache-store; an
    // operator's "sr configure" right after protecting would race that, so wait as they would.
    await waitUntil(
      `the processor to know ${name}`,
      async () => ((await this.processorVm(name)) === undefined ? undefined : true),
      30_000,
      100,
    );
    return vm;
  }

  async startAgentFor(vm: ProtectedVm, options: AgentStartOptions = {}): Promise<void> {
    vm.agent = await startAgent({
      vm: vm.name,
      disks: vm.disks,
      dataDir: vm.dataDir,
      ...(options.nbd === false ? { nbd: false } : {}),
      tokenFile: await this.credentials.agentTokenFile(vm.name),
      args: [
        '--cache-store',
        options.cacheStoreUrl ?? this.cacheStoreUrl,
        '--status',
        '127.0.0.1:0',
        ...(options.args ?? []),
      ],
    });
    vm.statusUrl = `http://${String(vm.agent.ready['status'])}/status`;
  }

  agentStatus(vm: ProtectedVm): Promise<AgentStatusDoc> {
    return getJson(vm.statusUrl) as Promise<AgentStatusDoc>;
  }

  async cacheStoreVm(name: string): Promise<CacheStoreVmDoc | undefined> {
    const s = (await getJson(`http://${this.cacheStore.listen}/status`, this.cacheStore.tokenFile)) as {
      vms: CacheStoreVmDoc[];
    };
    return s.vms.find((v) => v.vm === name);
  }

  async processorVm(name: string): Promise<ProcessorVmDoc | undefined> {
    const s = (await getJson(`http://${this.processor.listen}/status`, this.processor.tokenFile)) as {
      vms: ProcessorVmDoc[];
    };
    return s.vms.find((v) => v.vm === name);
  }

  /**
   * Waits until the processor has applied everything the agent captured (the agent is idle).
   * Returns the processor's view of the VM.
   */
  async drained(vm: ProtectedVm, timeoutMs = 120_000): Promise<ProcessorVmDoc> {
    return waitUntil(
      `${vm.name} to drain`,
      async () => {
        const a = await this.agentStatus(vm);
        const p = await this.processorVm(vm.name);
        if (p === undefined || a.replication === undefined) return undefined;
        // The same generation too: a new one's LSNs start again at 1 and may meet the old one's.
        // In bitmap mode everything journaled may be applied while the dirty regions are still to come
        // (a watch-mode agent has no bitmap mode).
        return a.replication.stream.ackedLsn === a.lsn &&
          p.generation === a.replication.generation &&
          p.appliedLsn === a.lsn &&
          a.replication.initialCopy.state === 'done' &&
          (a.mode === undefined || a.mode.state === 'streaming' || a.mode.state === 'watch')
          ? p
          : undefined;
      },
      timeoutMs,
    );
  }

  /** Byte-compares every replica of the VM with its source image; returns the mismatches. */
  async compare(vm: ProtectedVm): Promise<string[]> {
    const p = await this.processorVm(vm.name);
    if (p === undefined) return [`processor does not know ${vm.name}`];
    const bad: string[] = [];
    for (const d of vm.disks) {
      const replica = p.disks.find((x) => x.id === d.id);
      if (replica === undefined) {
        bad.push(`${vm.name}/${d.id}: no replica`);
        continue;
      }
      const diff = await firstDifference(d.path, replica.path);
      if (diff !== -1) bad.push(`${vm.name}/${d.id}: first difference at byte ${diff}`);
    }
    return bad;
  }

  async close(): Promise<void> {
    await Promise.all([...this.vms.values()].map((v) => v.agent.stop().catch(() => undefined)));
    await this.processor.stop().catch(() => undefined);
    await this.cacheStore.stop().catch(() => undefined);
    await this.cleanupDir();
  }
}
