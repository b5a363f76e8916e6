import fsp from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { ErrorCode, SrError, checkId, type Logger } from '@site-recovery/shared';
import {
  loadOrCreateState,
  newGeneration,
  readCheckpoint,
  restartedSinceCheckpoint,
  saveState,
  writeCheckpoint,
  type AgentState,
} from './agent-state.js';
import { redo } from './journal/redo.js';
import { CaptureBackend, LsnSequence, type ImageFailure } from './backend/capture-filter.js';
import { FileBackend } from './backend/file-backend.js';
import { FileJournal, type FileJournalOptions } from './journal/file-journal.js';
import type { Journal, JournalStats } from './journal/journal.js';
import { AppConsistentSnapshots, type AppConsistentStatus } from './replication/app-consistent.js';
import { InitialSync } from './replication/initial-copy.js';
import { journalDir } from './names.js';
import { NbdServer, StaticExports, type NbdServerLimits } from '@site-recovery/shared/nbd';
import { Shipper, type ShipperLimits, type ShipperStatus } from './replication/shipper.js';

/** See AgentConfig.checkpointIntervalMs. */
export const DEFAULT_CHECKPOINT_INTERVAL_MS = 30_000;
/** How often an agent without a backlog looks at its journal's size: at 1 GB/s, a small part of the half cap left. */
const JOURNAL_WATCH_MS = 1000;

export interface DiskConfig {
  readonly id: string;
  readonly path: string;
}

export interface AgentConfig {
  readonly vm: string;
  readonly disks: readonly DiskConfig[];
  readonly nbdHost: string;
  /** 0 picks a free port. */
  readonly nbdPort: number;
  readonly dataDir: string;
  readonly journal?: FileJournalOptions;
  readonly nbdLimits?: Partial<NbdServerLimits>;
  /**
   * How often the images are fsynced and the checkpoint advanced. Default 30 s, the kernel's own
   * age for writing back dirty pages (vm.dirty_expire_centisecs): a checkpoint then mostly finds the
   * images already written, instead of forcing out blocks the VM is about to overwrite again. At 5 s
   * the forced writeback took about a quarter of this disk's bandwidth on sequential writes.
   *
   * The checkpoint bounds two things. Redo after a crash replays the journal from it (so at most one
   * interval of writes, and never more than the journal's cap). Shipped segments are released only
   * below it, so a checkpoint is also taken early whenever the journal passes half its cap and the
   * cache-store has acknowledged past the last one.
   */
  readonly checkpointIntervalMs?: number;
  /**
   * Replicate to a cache-store; without it the agent only captures into its journal. An agent whose
   * data dir has never replicated keeps its journal from the starting images (so `sr-journal replay`
   * can rebuild them) until the journal passes half its cap, and from then on lets go of the oldest
   * segments the images hold (below a checkpoint): its first replicated start begins a new generation
   * with a full copy and has no use for them. One that has replicated keeps them as the backlog for
   * its next replicated start, and stalls at the cap.
   */
  readonly replication?: ReplicationConfig;
  readonly log: Logger;
}

export interface ReplicationConfig {
  /** ws:// URL of the cache-store. */
  readonly url: string;
  readonly credential?: string;
  /** Start a new generation (and a full initial copy) even if the data dir holds one. */
  readonly resync?: boolean;
  readonly shipper?: Partial<ShipperLimits>;
  /** App-consistent points: commands run around an APP marker every `frequencyMs`. */
  readonly appConsistent?: {
    readonly frequencyMs: number;
    readonly preSnapshot?: string;
    readonly postSnapshot?: string;
  };
}

export interface AgentStatus {
  readonly vm: string;
  readonly nbd: string;
  readonly lsn: number;
  readonly checkpointLsn: number;
  readonly journal: JournalStats;
  readonly connections: number;
  readonly replication?: {
    readonly generation: string;
    readonly stream: ShipperStatus;
    readonly initialCopy: {
      readonly state: 'copying' | 'done';
      readonly copiedBytes: number;
      readonly totalBytes: number;
      readonly percent: number;
    };
    readonly appConsistent?: AppConsistentStatus;
  };
  /** Why writes are waiting, when they are. */
  readonly stalled?: string;
  /** Disks whose image failed a journaled write: they refuse writes until a restart replays it. */
  readonly imageFailures?: readonly ({ readonly disk: string } & ImageFailure)[];
}

/** One protected VM: its disks served over NBD through the capture filter into one journal. */
export class Agent {
  private checkpointLsn: number;
  private checkpointTimer: NodeJS.Timeout | undefined;
  private checkpointing: Promise<void> | undefined;
  private closed = false;
  private shipper: Shipper | undefined;
  private initialSync: InitialSync | undefined;
  private initialSyncRun: Promise<void> | undefined;
  private appConsistent: AppConsistentSnapshots | undefined;
  private ackedLsn = 0;
  private state!: AgentState;
  private journalWatch: NodeJS.Timeout | undefined;
  private toldReleased = false;

  private constructor(
    private readonly config: AgentConfig,
    private readonly images: FileBackend[],
    private readonly captures: CaptureBackend[],
    private readonly journal: Journal,
    private readonly lsns: LsnSequence,
    private readonly server: NbdServer,
    readonly address: AddressInfo,
    checkpointLsn: number,
  ) {
    this.checkpointLsn = checkpointLsn;
  }

  static async start(config: AgentConfig): Promise<Agent> {
    checkId('VM name', config.vm);
    if (config.disks.length === 0) throw new SrError(ErrorCode.BAD_OPTION, 'a VM needs at least one --disk ID=PATH');
    const ids = new Set<string>();
    for (const d of config.disks) {
      checkId('disk id', d.id);
      if (ids.has(d.id)) throw new SrError(ErrorCode.BAD_OPTION, `disk id "${d.id}" is given twice`);
      ids.add(d.id);
    }
    await fsp.mkdir(config.dataDir, { recursive: true });
    const images: FileBackend[] = [];
    try {
      for (const d of config.disks) images.push(FileBackend.open(d.path));
      let state = await loadOrCreateState(config.dataDir, {
        version: 1,
        vm: config.vm,
        disks: config.disks.map((d, i) => ({ id: d.id, size: images[i]!.size })),
      });
      // Everything through the checkpoint was synced before it was written: damage after it can be
      // the unsynced tail of a crash, which the journal cuts rather than refusing to open.
      let journal = await FileJournal.open(journalDir(config.dataDir), {
        ...config.journal,
        syncedThroughLsn: await readCheckpoint(config.dataDir),
      });
      for (const repair of journal.repairs) config.log.warn({ repair }, 'journal: cut what a crash left unsynced');
      // After the machine crashed, a cut journal cannot prove the stream continuous: the kernel may have
      // written an image page back before the journal page of its record. (After the agent alone died
      // the page cache survived, and a cut group never reached the images: they are written after it.)
      // Asked before redo, which writes a new checkpoint.
      const lostRecords =
        journal.repairs.length > 0 &&
        state.replication !== undefined &&
        (await restartedSinceCheckpoint(config.dataDir));
      let checkpoint = await redo(config.dataDir, journal, images, config.log);
      if (lostRecords && config.replication !== undefined) {
        config.log.warn(
          'the journal lost records in a crash, so the replica may lack writes the images hold: starting a new replication generation',
        );
      } else if (lostRecords) {
        // Not replicating this time: forget the generation, so the next start with a cache-store begins a new one.
        config.log.warn(
          'the journal lost records in a crash: the next start with a cache-store begins a new replication generation',
        );
        state = { version: state.version, vm: state.vm, disks: state.disks };
        await saveState(config.dataDir, state);
      }
      if (
        config.replication !== undefined &&
        (state.replication === undefined || config.replication.resync === true || lostRecords)
      ) {
        // A new generation: the stream restarts at LSN 1 with a full copy of the disks, so the old
        // journal (already redone onto the images above) has nothing left to give.
        await journal.close();
        await fsp.rm(journalDir(config.dataDir), { recursive: true, force: true });
        journal = await FileJournal.open(journalDir(config.dataDir), config.journal);
        await writeCheckpoint(config.dataDir, 0);
        checkpoint = 0;
        state = { ...state, replication: { generation: newGeneration(), copiedBytes: 0, copyComplete: false } };
        await saveState(config.dataDir, state);
        config.log.info(
          { generation: state.replication!.generation },
          'new replication generation: the disks will be copied in full',
        );
      }
      if (
        config.replication !== undefined &&
        state.replication !== undefined &&
        state.replication.unconfirmedFromLsn === undefined
      ) {
        // Recorded before the VM can write, and kept until the cache-store's position is checked.
        state = { ...state, replication: { ...state.replication, unconfirmedFromLsn: journal.lastLsn } };
        await saveState(config.dataDir, state);
      }
      const lsns = new LsnSequence(journal.lastLsn);
      const captures = images.map(
        (image, disk) =>
          new CaptureBackend(image, {
            disk,
            lsns,
            journal,
            onImageFailure: (f) =>
              config.log.error(
                { disk: config.disks[disk]!.id, lsn: f.lsn, err: f.error },
                'image write failed after its record was journaled; the disk refuses writes until the agent is restarted (the restart replays the record)',
              ),
          }),
      );
      const exports = config.disks.map((d, i) => ({
        name: d.id,
        description: `${config.vm} disk ${d.id}`,
        readOnly: false,
        backend: captures[i]!,
      }));
      const server = new NbdServer({
        exports: new StaticExports(exports),
        log: config.log,
        limits: config.nbdLimits ?? {},
      });
      const address = await server.listen(config.nbdHost, config.nbdPort);
      const agent = new Agent(config, images, captures, journal, lsns, server, address, checkpoint);
      agent.state = state;
      agent.scheduleCheckpoint();
      agent.startReplication();
      config.log.info(
        { vm: config.vm, nbd: `${address.address}:${address.port}`, lsn: journal.lastLsn },
        'agent started',
      );
      return agent;
    } catch (err) {
      await Promise.all(images.map((i) => i.close().catch(() => undefined)));
      throw err;
    }
  }

  private startReplication(): void {
    const r = this.config.replication;
    const rep = this.state.replication;
    if (r === undefined || rep === undefined) return;
    this.shipper = new Shipper({
      url: r.url,
      vm: this.config.vm,
      generation: rep.generation,
      disks: this.state.disks,
      journal: this.journal,
      log: this.config.log,
      ...(rep.unconfirmedFromLsn !== undefined ? { startLsn: rep.unconfirmedFromLsn } : {}),
      onPositionConfirmed: () => void this.positionConfirmed(),
      ...(r.credential !== undefined ? { credential: r.credential } : {}),
      ...(r.shipper !== undefined ? { limits: r.shipper } : {}),
      onAcked: (lsn) => {
        this.ackedLsn = lsn;
        void this.release();
        if (this.overHalfCap() && lsn > this.checkpointLsn) this.requestCheckpoint();
      },
      // The processor's replication policy sets the frequency; the commands stay local to the agent.
      onPolicy: (ms) => {
        this.appConsistent ??= new AppConsistentSnapshots({
          frequencyMs: 0,
          ...r.appConsistent,
          lsns: this.lsns,
          journal: this.journal,
          log: this.config.log,
        });
        this.appConsistent.setFrequency(ms);
      },
    });
    this.shipper.start();
    if (r.appConsistent !== undefined) {
      this.appConsistent = new AppConsistentSnapshots({
        ...r.appConsistent,
        lsns: this.lsns,
        journal: this.journal,
        log: this.config.log,
      });
      this.appConsistent.start();
    }
    if (!rep.copyComplete) {
      this.initialSync = new InitialSync({
        captures: this.captures,
        lsns: this.lsns,
        journal: this.journal,
        startAt: rep.copiedBytes,
        log: this.config.log,
        onProgress: async (copiedBytes, complete) => {
          this.state = {
            ...this.state,
            replication: { ...this.state.replication!, copiedBytes, copyComplete: complete },
          };
          await this.persistState();
        },
      });
      this.initialSyncRun = this.initialSync.run().catch((err: unknown) => {
        if (this.closed) return; // stopped while it waited for journal room; it resumes at the next start
        this.config.log.error(
          { err: (err as Error).message },
          'initial copy failed; it resumes when the agent restarts',
        );
      });
    }
  }

  /**
   * Saves the state as it is when this save's turn comes. The initial copy and the shipper both
   * change it, and one after the other keeps an older state from landing over a newer one.
   */
  private persistState(): Promise<void> {
    const next = this.stateSaved.catch(() => undefined).then(() => saveState(this.config.dataDir, this.state));
    this.stateSaved = next;
    return next;
  }

  private stateSaved: Promise<void> = Promise.resolve();

  /** The cache-store's position checked out: a later restart records the journal's end afresh. */
  private async positionConfirmed(): Promise<void> {
    const rep = this.state.replication;
    if (rep?.unconfirmedFromLsn === undefined) return;
    const confirmed = { ...rep };
    delete confirmed.unconfirmedFromLsn;
    this.state = { ...this.state, replication: confirmed };
    try {
      await this.persistState();
    } catch (err) {
      this.config.log.warn({ err: (err as Error).message }, 'saving the agent state failed');
    }
  }

  /** No generation to ship a backlog to: see AgentConfig.replication. */
  private get keepsNoBacklog(): boolean {
    return this.config.replication === undefined && this.state.replication === undefined;
  }

  /** Past half its cap, the journal of an agent without a backlog goes down to its checkpoint. */
  private overHalfCap(): boolean {
    const j = this.journal.stats();
    return j.bytes >= j.maxBytes / 2;
  }

  /**
   * Journal segments can go once the images hold their writes and the cache-store holds them, or no
   * cache-store will ever ask for them.
   */
  private async release(): Promise<void> {
    const through = !this.keepsNoBacklog
      ? Math.min(this.ackedLsn, this.checkpointLsn)
      : this.overHalfCap()
        ? this.checkpointLsn
        : 0;
    try {
      await this.journal.releaseThrough(through);
      const first = this.journal.stats().firstLsn;
      if (first > 1 && this.keepsNoBacklog && !this.toldReleased) {
        this.toldReleased = true;
        this.config.log.info(
          { firstLsn: first },
          `the journal passed half its cap and no longer reaches back to the starting images: sr-journal replay now needs images as of LSN ${first - 1}`,
        );
      }
    } catch (err) {
      this.config.log.warn({ err: (err as Error).message }, 'releasing journal segments failed');
    }
  }

  private imageFailures(): { imageFailures?: AgentStatus['imageFailures'] } {
    const out = this.captures.flatMap((c, i) => {
      const f = c.failure();
      return f === undefined ? [] : [{ disk: this.config.disks[i]!.id, ...f }];
    });
    return out.length === 0 ? {} : { imageFailures: out };
  }

  status(): AgentStatus {
    const journal = this.journal.stats();
    const rep = this.state.replication;
    const copy = this.initialSync?.progress();
    return {
      vm: this.config.vm,
      nbd: `${this.address.address}:${this.address.port}`,
      lsn: this.lsns.current,
      checkpointLsn: this.checkpointLsn,
      journal,
      connections: this.server.connectionCount,
      ...(rep !== undefined && this.shipper !== undefined
        ? {
            replication: {
              generation: rep.generation,
              stream: this.shipper.status(),
              initialCopy:
                copy !== undefined && !rep.copyComplete
                  ? {
                      state: 'copying' as const,
                      copiedBytes: copy.copiedBytes,
                      totalBytes: copy.totalBytes,
                      percent: copy.percent,
                    }
                  : { state: 'done' as const, copiedBytes: rep.copiedBytes, totalBytes: rep.copiedBytes, percent: 100 },
              ...(this.appConsistent !== undefined ? { appConsistent: this.appConsistent.status() } : {}),
            },
          }
        : {}),
      ...this.imageFailures(),
      ...(journal.stalled
        ? {
            stalled: `journal at its cap of ${journal.maxBytes} bytes: VM writes wait until ${this.keepsNoBacklog ? 'a checkpoint lets the oldest segments go' : 'the cache-store acknowledges'}`,
          }
        : {}),
    };
  }

  private scheduleCheckpoint(): void {
    this.checkpointTimer = setInterval(
      () => this.requestCheckpoint(),
      this.config.checkpointIntervalMs ?? DEFAULT_CHECKPOINT_INTERVAL_MS,
    );
    this.checkpointTimer.unref();
    if (!this.keepsNoBacklog) return;
    // Nothing acknowledges segments here, so the journal's size itself asks for the early checkpoint.
    this.journalWatch = setInterval(() => {
      if (this.overHalfCap()) this.requestCheckpoint();
    }, JOURNAL_WATCH_MS);
    this.journalWatch.unref();
  }

  /** Starts a checkpoint unless one is running. */
  private requestCheckpoint(): void {
    if (this.closed) return;
    this.checkpointing ??= this.checkpoint()
      .catch((err: unknown) => this.config.log.error({ err: (err as Error).message }, 'checkpoint failed'))
      .finally(() => (this.checkpointing = undefined));
  }

  /**
   * Advances the redo start point to the highest LSN below which every write has reached its image,
   * once the journal and the images are durable through it.
   */
  private async checkpoint(): Promise<void> {
    const floor = Math.min(this.lsns.current, ...this.captures.map((c) => c.oldestPending() - 1));
    if (floor <= this.checkpointLsn) return;
    await this.journal.sync();
    await Promise.all(this.images.map((i) => i.flush()));
    await writeCheckpoint(this.config.dataDir, floor);
    this.checkpointLsn = floor;
    await this.release();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.checkpointTimer !== undefined) clearInterval(this.checkpointTimer);
    if (this.journalWatch !== undefined) clearInterval(this.journalWatch);
    // First: writers stalled at the journal cap would otherwise hold up everything below.
    this.journal.stopWaiting();
    await this.server.close();
    this.initialSync?.stop();
    await this.initialSyncRun;
    await this.appConsistent?.stop();
    await this.shipper?.stop();
    // Writes already journaled may still be on their way to the images: the checkpoint written
    // below says every record up to the last is in them, so it must wait for those writes.
    await Promise.all(this.captures.map((c) => c.drained()));
    await this.checkpointing;
    await this.journal.sync();
    await Promise.all(this.images.map((i) => i.flush()));
    await writeCheckpoint(this.config.dataDir, this.journal.lastLsn);
    await this.journal.close();
    await Promise.all(this.images.map((i) => i.close()));
    this.config.log.info({ vm: this.config.vm, lsn: this.journal.lastLsn }, 'agent stopped');
  }
}
