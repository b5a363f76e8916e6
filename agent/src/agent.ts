import fsp from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { ErrorCode, SrError, checkId, type Logger } from '@site-recovery/shared';
import { loadOrCreateState, readCheckpoint, writeCheckpoint } from './agent-state.js';
import { applyRecord } from './apply-record.js';
import type { BlockBackend } from './block-backend.js';
import { CaptureBackend, LsnSequence } from './capture-filter.js';
import { FileBackend } from './file-backend.js';
import { FileJournal, type FileJournalOptions } from './file-journal.js';
import type { Journal, JournalStats } from './journal.js';
import { journalDir } from './names.js';
import { NbdServer, StaticExports, type NbdServerLimits } from './nbd/index.js';

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
  /** How often the images are fsynced and the checkpoint advanced. Default 5 s. */
  readonly checkpointIntervalMs?: number;
  readonly log: Logger;
}

export interface AgentStatus {
  readonly vm: string;
  readonly nbd: string;
  readonly lsn: number;
  readonly checkpointLsn: number;
  readonly journal: JournalStats;
  readonly connections: number;
}

/** One protected VM: its disks served over NBD through the capture filter into one journal. */
export class Agent {
  private checkpointLsn: number;
  private checkpointTimer: NodeJS.Timeout | undefined;
  private checkpointing: Promise<void> | undefined;
  private closed = false;

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
      await loadOrCreateState(config.dataDir, {
        version: 1,
        vm: config.vm,
        disks: config.disks.map((d, i) => ({ id: d.id, size: images[i]!.size })),
      });
      const journal = await FileJournal.open(journalDir(config.dataDir), config.journal);
      const checkpoint = await redo(config, journal, images);
      const lsns = new LsnSequence(journal.lastLsn);
      const captures = images.map((image, disk) => new CaptureBackend(image, { disk, lsns, journal }));
      const exports = config.disks.map((d, i) => ({
        name: d.id,
        description: `${config.vm} disk ${d.id}`,
        readOnly: false,
        backend: captures[i]!,
      }));
      const server = new NbdServer({ exports: new StaticExports(exports), log: config.log, limits: config.nbdLimits ?? {} });
      const address = await server.listen(config.nbdHost, config.nbdPort);
      const agent = new Agent(config, images, captures, journal, lsns, server, address, checkpoint);
      agent.scheduleCheckpoint();
      config.log.info({ vm: config.vm, nbd: `${address.address}:${address.port}`, lsn: journal.lastLsn }, 'agent started');
      return agent;
    } catch (err) {
      await Promise.all(images.map((i) => i.close().catch(() => undefined)));
      throw err;
    }
  }

  status(): AgentStatus {
    return {
      vm: this.config.vm,
      nbd: `${this.address.address}:${this.address.port}`,
      lsn: this.lsns.current,
      checkpointLsn: this.checkpointLsn,
      journal: this.journal.stats(),
      connections: this.server.connectionCount,
    };
  }

  private scheduleCheckpoint(): void {
    const every = this.config.checkpointIntervalMs ?? 5000;
    this.checkpointTimer = setInterval(() => {
      this.checkpointing ??= this.checkpoint()
        .catch((err: unknown) => this.config.log.error({ err: (err as Error).message }, 'checkpoint failed'))
        .finally(() => (this.checkpointing = undefined));
    }, every);
    this.checkpointTimer.unref();
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
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.checkpointTimer !== undefined) clearInterval(this.checkpointTimer);
    await this.server.close();
    await this.checkpointing;
    await this.journal.sync();
    await Promise.all(this.images.map((i) => i.flush()));
    await writeCheckpoint(this.config.dataDir, this.journal.lastLsn);
    await this.journal.close();
    await Promise.all(this.images.map((i) => i.close()));
    this.config.log.info({ vm: this.config.vm, lsn: this.journal.lastLsn }, 'agent stopped');
  }
}

/**
 * Replays journal records after the checkpoint onto the images. After a crash the journal may hold
 * writes the images lost (write-ahead order guarantees the converse never happens); replaying in LSN
 * order is idempotent, so replaying records the images already hold is harmless.
 */
async function redo(config: AgentConfig, journal: Journal, images: BlockBackend[]): Promise<number> {
  const from = Math.max(await readCheckpoint(config.dataDir), journal.firstLsn - 1);
  let n = 0;
  for await (const r of journal.read(from + 1)) {
    const image = images[r.disk];
    if (image === undefined) throw new SrError(ErrorCode.JOURNAL_CORRUPT, `journal record ${r.lsn} names disk ${r.disk}, which this VM does not have`);
    await applyRecord(image, r);
    n++;
  }
  if (n > 0) {
    await Promise.all(images.map((i) => i.flush()));
    config.log.info({ records: n, from: from + 1, to: journal.lastLsn }, 'replayed journal tail onto the images');
  }
  await writeCheckpoint(config.dataDir, journal.lastLsn);
  return journal.lastLsn;
}
