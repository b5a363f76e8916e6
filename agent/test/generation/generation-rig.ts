import fsp from 'node:fs/promises';
import { RecordKind, type ChangeRecord } from '@site-recovery/shared';
import type { Agent } from '../../src/agent.js';
import type { AgentConfig } from '../../src/agent-config.js';
import { startInProcess } from '../in-process-agent.js';
import { ScriptedCacheStore, type PeerConnection } from '../replication/scripted-cache-store.js';

/** Reconnects and generation retries fast enough not to slow the tests. */
export const FAST = {
  shipper: { reconnectMinMs: 5, reconnectMaxMs: 50 },
  generationRetry: { initialDelayMs: 10, maxDelayMs: 50, jitter: 0 },
} as const;

/**
 * An in-process agent streaming to a scripted cache-store that welcomes every connection at
 * `durableLsn` (0 unless told) and acknowledges whatever arrives, so that the stream of each generation
 * can be replayed onto a model replica and compared with the source image.
 */
export class GenerationRig {
  private acker: NodeJS.Timeout | undefined;
  /** Where a connection not welcomed yet is welcomed; undefined holds its welcome back. */
  welcomeAt: (c: PeerConnection) => number | undefined = () => 0;
  /** Whether what arrives on a connection is acknowledged (false: held back, so the journal fills). */
  acks: (c: PeerConnection) => boolean = () => true;

  private constructor(
    readonly store: ScriptedCacheStore,
    public agent: Agent,
    readonly image: string,
    readonly dataDir: string,
    private readonly dir: string,
    private readonly vm: string,
    private readonly more: Partial<Omit<AgentConfig, 'vm' | 'disks' | 'dataDir' | 'log'>>,
  ) {}

  static async start(
    dir: string,
    vm: string,
    more: Partial<Omit<AgentConfig, 'vm' | 'disks' | 'dataDir' | 'log'>> = {},
  ): Promise<GenerationRig> {
    const store = await ScriptedCacheStore.start();
    const started = await startInProcess(dir, vm, {
      replication: { url: store.url, shipper: FAST.shipper },
      generationRetry: FAST.generationRetry,
      ...more,
    });
    const rig = new GenerationRig(store, started.agent, started.image, started.dataDir, dir, vm, more);
    rig.acker = setInterval(() => rig.serve(), 5);
    return rig;
  }

  /** Stops the agent and starts it again on the same data dir and image, with the options it started with. */
  async restart(): Promise<void> {
    await this.agent.close();
    this.agent = (
      await startInProcess(this.dir, this.vm, {
        replication: { url: this.store.url, shipper: FAST.shipper },
        generationRetry: FAST.generationRetry,
        ...this.more,
      })
    ).agent;
  }

  private serve(): void {
    for (const c of this.store.connections) {
      if (c.closed || c.hello === undefined) continue;
      if (!this.welcomed.has(c)) {
        const at = this.welcomeAt(c);
        if (at === undefined) continue;
        this.welcomed.add(c);
        c.welcome(at);
      }
      if (c.batches.length > 0 && this.acks(c)) c.ack(c.lastLsn);
    }
  }

  private readonly welcomed = new Set<PeerConnection>();

  /** The newest connection that said hello. */
  latest(): PeerConnection | undefined {
    return this.store.connections.filter((c) => c.hello !== undefined).at(-1);
  }

  /** Waits until the agent's current generation has copied everything and shipped every LSN it handed out. */
  async drained(what: string): Promise<PeerConnection> {
    return this.store.until(
      `${what}: the current generation to copy everything and ship every LSN`,
      () => {
        const s = this.agent.status();
        const c = this.latest();
        const done =
          s.replication?.initialCopy.state === 'done' &&
          c?.hello?.generation === s.replication.generation &&
          c.lastLsn === s.lsn;
        return done ? c : undefined;
      },
      60_000,
    );
  }

  /** Every generation the cache-store side was greeted with, in order, without repeats. */
  generations(): string[] {
    const seen: string[] = [];
    for (const c of this.store.connections)
      if (c.hello !== undefined && seen.at(-1) !== c.hello.generation) seen.push(c.hello.generation);
    return seen;
  }

  /**
   * What a replica that started as zeroes holds after every record of `generation` the cache-store side
   * received (connections of one generation continue each other), compared with the image: the byte
   * offset of the first difference, or -1.
   */
  async replicaDifference(generation: string): Promise<number> {
    const image = await fsp.readFile(this.image);
    const replica = Buffer.alloc(image.length);
    const records: ChangeRecord[] = [];
    for (const c of this.store.connections) {
      if (c.hello?.generation !== generation) continue;
      for (const b of c.batches) for (const r of b.records) if (r.lsn > (records.at(-1)?.lsn ?? 0)) records.push(r);
    }
    records.forEach((r, i) => {
      if (r.lsn !== i + 1) throw new Error(`generation ${generation}: LSN ${r.lsn} where ${i + 1} was expected`);
      if (r.kind === RecordKind.WRITE) r.data!.copy(replica, r.offset);
      else if (r.kind === RecordKind.ZERO || r.kind === RecordKind.TRIM) replica.fill(0, r.offset, r.offset + r.length);
    });
    for (let at = 0; at < image.length; at += 4096) {
      if (image.compare(replica, at, at + 4096, at, at + 4096) !== 0) return at;
    }
    return -1;
  }

  async close(): Promise<void> {
    clearInterval(this.acker);
    await this.agent.close().catch(() => undefined);
    await this.store.close();
  }
}
