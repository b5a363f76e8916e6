import fsp from 'node:fs/promises';
import { ErrorCode, SrError, systemErrorCode, type Logger } from '@site-recovery/shared';
import { StateStore, writeCheckpoint } from '../agent-state.js';
import { LsnSequence } from '../backend/capture-filter.js';
import type { FileJournal } from '../journal/file-journal.js';
import type { JournalStats } from '../journal/journal.js';
import type { ReplicationStatus } from '../replication/agent-replication.js';
import { watchDir, watchSumsFile } from '../names.js';
import { ImageScanner, type ScanReport, type ScannedDisk } from './image-scan.js';
import { ShippedSums } from './shipped-sums.js';
import type { WatchAgentConfig, WatchLimits } from './watch-config.js';
import { openWatchDataDir } from './watch-startup.js';
import { WatchReplication } from './watch-replication.js';

/**
 * One generation of a watch-mode agent: its journal, the sums of what it shipped, the scanner that
 * journals changes, and the stream to the cache-store. A disk resized ends the session; the agent opens
 * a new one, which begins a new generation with the new layout.
 */
export class WatchSession {
  private constructor(
    private readonly config: WatchAgentConfig,
    private readonly journal: FileJournal,
    private readonly lsns: LsnSequence,
    private readonly state: StateStore,
    private readonly disks: readonly ScannedDisk[],
    private readonly scanner: ImageScanner,
    private readonly replication: WatchReplication,
    /** Why this session began a new generation, if it did. */
    readonly newGeneration: string | undefined,
  ) {}

  /** `activity` counts change events; `resync` (a reason) forces a new generation. */
  static async open(
    config: WatchAgentConfig,
    limits: WatchLimits,
    activity: () => number,
    resync: string | undefined,
  ): Promise<WatchSession> {
    const { dataDir, log } = config;
    const sizes = await Promise.all(config.disks.map((d) => imageSize(d.id, d.path)));
    const opened = await openWatchDataDir(config, sizes, resync);
    const { journal } = opened;
    try {
      const rep = opened.state.replication;
      await fsp.mkdir(watchDir(dataDir), { recursive: true });
      const disks: ScannedDisk[] = [];
      for (const [i, d] of config.disks.entries()) {
        const size = opened.state.disks[i]!.size;
        const identity = { generation: rep.generation, disk: d.id, size, blockBytes: limits.blockBytes };
        const loaded = await ShippedSums.load(watchSumsFile(dataDir, d.id), identity);
        if (loaded.discarded !== undefined && opened.newGeneration === undefined)
          log.warn({ disk: d.id, why: loaded.discarded }, 'watch: the shipped sums cannot be used');
        disks.push({ id: d.id, path: d.path, size, sums: loaded.sums });
      }
      const state = new StateStore(dataDir, opened.state);
      const lsns = new LsnSequence(journal.lastLsn);
      const total = disks.reduce((n, d) => n + d.size, 0);
      const scanner = new ImageScanner({
        disks,
        journal,
        lsns,
        limits,
        activity,
        copyComplete: rep.copyComplete,
        persist: async (lsn) => {
          // The journal is synced through `lsn`: opening it after a crash may cut only what follows.
          await writeCheckpoint(dataDir, lsn);
          await Promise.all(disks.map((d) => d.sums.save(watchSumsFile(dataDir, d.id), lsn)));
        },
        onCopyComplete: () =>
          state.update((s) => ({ ...s, replication: { ...s.replication!, copiedBytes: total, copyComplete: true } })),
        log,
      });
      const replication = new WatchReplication({ config: config.replication, vm: config.vm, state, journal, log });
      replication.start();
      return new WatchSession(config, journal, lsns, state, disks, scanner, replication, opened.newGeneration);
    } catch (err) {
      await journal.close().catch(() => undefined);
      throw err;
    }
  }

  get generation(): string {
    return this.state.state.replication!.generation;
  }

  get lsn(): number {
    return this.lsns.current;
  }

  scan(): Promise<ScanReport> {
    return this.scanner.scan();
  }

  journalStats(): JournalStats {
    return this.journal.stats();
  }

  diskList(): { id: string; path: string; size: number }[] {
    return this.disks.map((d) => ({ id: d.id, path: d.path, size: d.size }));
  }

  replicationStatus(failing: boolean): ReplicationStatus {
    const p = this.scanner.progress();
    const done = this.scanner.initialCopyDone;
    const copied = done ? p.totalBytes : p.scannedBytes;
    return this.replication.status({
      state: done ? 'done' : failing ? 'failed' : 'copying',
      copiedBytes: copied,
      totalBytes: p.totalBytes,
      percent: done ? 100 : p.totalBytes === 0 ? 0 : Math.floor((copied / p.totalBytes) * 1000) / 10,
    });
  }

  /** Ends a scan in progress at its next step, and any wait of it for room in the journal. */
  stopScanning(): void {
    this.scanner.stop();
    this.journal.stopWaiting();
  }

  /**
   * Stops the stream and closes the journal. The sums of what was journaled are saved first (after a sync),
   * so a long first scan cut short by a stop resumes instead of sending every block again.
   */
  async close(log: Logger): Promise<void> {
    this.stopScanning();
    await this.replication.stop();
    try {
      await this.journal.sync();
      const lsn = this.journal.lastLsn;
      await writeCheckpoint(this.config.dataDir, lsn);
      await Promise.all(this.disks.map((d) => d.sums.save(watchSumsFile(this.config.dataDir, d.id), lsn)));
    } catch (err) {
      log.warn(
        { err: (err as Error).message },
        'watch: the shipped sums could not be saved; the next scan sends again what they lack',
      );
    }
    await this.journal.close();
  }
}

/** An image's size now; SR_BAD_DISK when it cannot be looked at. */
async function imageSize(id: string, file: string): Promise<number> {
  try {
    const s = await fsp.stat(file);
    // A block device raises no inotify event for writes through another path: only files can be watched.
    if (!s.isFile()) throw new SrError(ErrorCode.BAD_DISK, `disk ${id}: ${file} is not a regular file`);
    if (s.size === 0) throw new SrError(ErrorCode.BAD_DISK, `disk ${id}: ${file} is empty`);
    return s.size;
  } catch (err) {
    if (err instanceof SrError) throw err;
    throw new SrError(
      ErrorCode.BAD_DISK,
      `disk ${id}: cannot stat ${file} (${systemErrorCode(err) ?? (err as Error).message})`,
      {
        cause: err,
      },
    );
  }
}
