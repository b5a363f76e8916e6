import type { Logger } from '@site-recovery/shared';
import type { ReplicationConfig } from '../agent-config.js';
import type { StateStore } from '../agent-state.js';
import type { CaptureBackend, LsnSequence } from '../backend/capture-filter.js';
import type { Journal } from '../journal/journal.js';
import { AppConsistentSnapshots, type AppConsistentStatus } from './app-consistent.js';
import { resyncSumsFile } from '../names.js';
import { InitialSync, type InitialCopyStatus } from './initial-copy.js';
import { Shipper, type ShipperStatus } from './shipper.js';
import { DEFAULT_SUMS_OPTIONS, SumsExchange } from './sums-exchange.js';

/**
 * How often the stream's state is looked at to notice that it went down. The shipper tells of every
 * acknowledgement (the link is up) but not of a drop, so `disconnectedSince` is late by up to this.
 */
const LINK_SAMPLE_MS = 1000;

export interface ReplicationStatus {
  readonly generation: string;
  readonly stream: ShipperStatus;
  /** Since when the stream has been down (connecting, waiting to reconnect, failed); absent while it streams. */
  readonly disconnectedSince?: string;
  readonly initialCopy: InitialCopyStatus;
  readonly appConsistent?: AppConsistentStatus;
}

export interface AgentReplicationOptions {
  readonly config: ReplicationConfig;
  readonly vm: string;
  /** Holds the generation (`state.replication` is set). */
  readonly state: StateStore;
  readonly journal: Journal;
  readonly lsns: LsnSequence;
  readonly captures: readonly CaptureBackend[];
  /** The agent's data dir: the replica's sums are kept there while the initial copy uses them. */
  readonly dataDir: string;
  readonly log: Logger;
  /** The cache-store made the stream durable through `lsn`. */
  readonly onAcked: (lsn: number) => void;
  /** The VM's replication group, named in the hello. */
  readonly group?: string;
  /** The policy's multi-VM frequency for the group (undefined: the processor sets none). */
  readonly onMultiVmFrequency?: (ms: number | undefined) => void;
  /** Why no recovery point can be cut now (bitmap mode, resync); app-consistent points are skipped then. */
  readonly pointRefusal?: () => string | undefined;
}

/**
 * The agent's side of one replication generation: the shipper streaming the journal, the initial
 * copy of a new generation, and app-consistent points, each persisting what it changes in the
 * agent's state.
 */
export class AgentReplication {
  private readonly shipper: Shipper;
  private appConsistent: AppConsistentSnapshots | undefined;
  private initialSync: InitialSync | undefined;
  private sums: SumsExchange | undefined;
  private initialSyncRun: Promise<void> | undefined;
  private disconnectedSince: number | undefined = Date.now();
  private linkTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: AgentReplicationOptions) {
    const rep = this.generation();
    const r = o.config;
    this.shipper = new Shipper({
      url: r.url,
      vm: o.vm,
      generation: rep.generation,
      disks: o.state.state.disks,
      journal: o.journal,
      log: o.log,
      ...(rep.unconfirmedFromLsn !== undefined ? { startLsn: rep.unconfirmedFromLsn } : {}),
      onPositionConfirmed: () => void this.positionConfirmed(),
      ...(r.token !== undefined ? { token: r.token } : {}),
      ...(r.tlsCa !== undefined ? { tlsCa: r.tlsCa } : {}),
      ...(r.shipper !== undefined ? { limits: r.shipper } : {}),
      onAcked: (lsn) => {
        this.disconnectedSince = undefined;
        o.onAcked(lsn);
      },
      ...(o.group !== undefined ? { group: o.group } : {}),
      // The processor's replication policy sets the frequency; the commands stay local to the agent.
      onPolicy: (ms, multiVmMs) => {
        this.appConsistent ??= this.newAppConsistent(0);
        this.appConsistent.setFrequency(ms);
        o.onMultiVmFrequency?.(multiVmMs);
      },
      onSums: (m) => this.sums?.onMessage(m),
      onSumsRequestSent: () => this.sums?.requestSent(),
    });
  }

  private generation(): NonNullable<StateStore['state']['replication']> {
    const rep = this.o.state.state.replication;
    if (rep === undefined) throw new Error('replication started without a generation in the agent state');
    return rep;
  }

  private newAppConsistent(frequencyMs: number): AppConsistentSnapshots {
    return new AppConsistentSnapshots({
      frequencyMs,
      ...this.o.config.appConsistent,
      lsns: this.o.lsns,
      journal: this.o.journal,
      log: this.o.log,
      ...(this.o.pointRefusal !== undefined ? { refusal: this.o.pointRefusal } : {}),
    });
  }

  start(): void {
    this.shipper.start();
    this.linkTimer = setInterval(() => this.sampleLink(), LINK_SAMPLE_MS);
    this.linkTimer.unref();
    const app = this.o.config.appConsistent;
    if (app !== undefined) {
      this.appConsistent = this.newAppConsistent(app.frequencyMs);
      this.appConsistent.start();
    }
    const rep = this.generation();
    if (rep.copyComplete) return;
    this.sums = new SumsExchange({
      vm: this.o.vm,
      generation: rep.generation,
      disks: this.o.state.state.disks,
      file: resyncSumsFile(this.o.dataDir),
      options: { ...DEFAULT_SUMS_OPTIONS, ...this.o.config.sums },
      send: (request) => this.shipper.requestSums(request),
      log: this.o.log,
    });
    this.initialSync = new InitialSync({
      sums: this.sums,
      captures: this.o.captures,
      lsns: this.o.lsns,
      journal: this.o.journal,
      startAt: rep.copiedBytes,
      log: this.o.log,
      ...(this.o.config.initialCopyRetry !== undefined ? { retry: this.o.config.initialCopyRetry } : {}),
      onProgress: (copiedBytes, copyComplete) =>
        this.o.state.update((s) => ({ ...s, replication: { ...s.replication!, copiedBytes, copyComplete } })),
    });
    this.initialSyncRun = this.initialSync.run();
  }

  private sampleLink(): void {
    if (this.shipper.status().state === 'streaming') this.disconnectedSince = undefined;
    else this.disconnectedSince ??= Date.now();
  }

  /** The cache-store's position checked out: a later restart records the journal's end afresh. */
  private async positionConfirmed(): Promise<void> {
    if (this.o.state.state.replication?.unconfirmedFromLsn === undefined) return;
    try {
      await this.o.state.update((s) => {
        const confirmed = { ...s.replication! };
        delete confirmed.unconfirmedFromLsn;
        return { ...s, replication: confirmed };
      });
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'saving the agent state failed');
    }
  }

  status(): ReplicationStatus {
    this.sampleLink();
    const rep = this.generation();
    const copy = this.initialSync?.status();
    return {
      generation: rep.generation,
      stream: this.shipper.status(),
      ...(this.disconnectedSince !== undefined
        ? { disconnectedSince: new Date(this.disconnectedSince).toISOString() }
        : {}),
      // The copy's own status once it ran in this process (its counts), else what the state says.
      initialCopy: copy ?? { state: 'done', copiedBytes: rep.copiedBytes, totalBytes: rep.copiedBytes, percent: 100 },
      ...(this.appConsistent !== undefined ? { appConsistent: this.appConsistent.status() } : {}),
    };
  }

  /** Stops copying, marking and shipping; what was journaled stays for the next start. */
  async stop(): Promise<void> {
    clearInterval(this.linkTimer);
    this.initialSync?.stop();
    await this.initialSyncRun;
    await this.appConsistent?.stop();
    await this.shipper.stop();
  }
}
