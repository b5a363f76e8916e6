import path from 'node:path';
import {
  Backoff,
  ErrorCode,
  SrError,
  checkId,
  isSrError,
  systemErrorCode,
  type BackoffOptions,
} from '@site-recovery/shared';
import { checkToken } from '../agent.js';
import { DEFAULT_HEALTH_DISCONNECTED_MS } from '../agent-config.js';
import type { AgentHealth } from '../health.js';
import { DiskResized, type ScanReport } from './image-scan.js';
import { ChangeWatcher } from './change-watcher.js';
import { watchLimits, type WatchAgentConfig, type WatchLimits } from './watch-config.js';
import { WatchSession } from './watch-session.js';
import { watchHealthOf, type ScanFailure, type WatchAgentStatus, type WatchStatus } from './watch-status.js';

/** A failed scan is retried; an image may come back (a rename over it, a remount), so it never gives up. */
const DEFAULT_SCAN_RETRY: BackoffOptions = { initialDelayMs: 1000, maxDelayMs: 60_000, jitter: 0.5 };

/**
 * Protects a VM whose images another process writes (agent/README.md, "Watch mode"): no NBD listener.
 * Change events start scans after a debounce (or once a change has waited `maxDelayMs`), and a scan runs
 * at least every `rescanIntervalMs`; each scan journals what changed since it was last shipped, and a
 * clean one ends with the SCAN marker the processor cuts points at.
 */
export class WatchAgent {
  private session: WatchSession | undefined;
  private readonly watcher: ChangeWatcher;
  private readonly limits: WatchLimits;
  private readonly startedAt = new Date().toISOString();
  private readonly backoff: Backoff;
  /** The first change no scan has covered yet (one that started after it). */
  private pendingSince: number | undefined;
  /** The newest change seen: an event, or an image's modification time. */
  private lastChange = 0;
  private lastScanEnd = 0;
  private scanning = false;
  private scans = 0;
  private cleanScans = 0;
  private lastScan: ScanReport | undefined;
  private lastMarkerLsn: number | undefined;
  private lastClean: WatchStatus['lastCleanScan'];
  private failure: ScanFailure | undefined;
  private retryAt: number | undefined;
  private newGeneration: WatchStatus['newGeneration'];
  private wake: (() => void) | undefined;
  private closing = false;
  private closed: Promise<void> | undefined;
  private running: Promise<void> | undefined;

  private constructor(private readonly config: WatchAgentConfig) {
    this.limits = watchLimits(config.watch);
    this.backoff = new Backoff(config.watch?.retry ?? DEFAULT_SCAN_RETRY);
    this.watcher = new ChangeWatcher(
      config.disks.map((d) => path.resolve(d.path)),
      () => this.onChange(),
      config.log,
    );
  }

  /**
   * Checks the configuration, watches the images, opens the data dir (a new generation when it needs
   * one) and starts the first scan at once: it is the initial copy, or catches up with what was written
   * while the agent was away.
   */
  static async start(config: WatchAgentConfig): Promise<WatchAgent> {
    checkId('VM name', config.vm);
    if (config.disks.length === 0) throw new SrError(ErrorCode.BAD_OPTION, 'a VM needs at least one --disk ID=PATH');
    const ids = new Set<string>();
    for (const d of config.disks) {
      checkId('disk id', d.id);
      if (ids.has(d.id)) throw new SrError(ErrorCode.BAD_OPTION, `disk id "${d.id}" is given twice`);
      ids.add(d.id);
    }
    checkToken(config);
    const agent = new WatchAgent(config);
    // Watching before the first scan reads anything: a write during it must make it unclean.
    await agent.watcher.start();
    try {
      agent.session = await WatchSession.open(
        config,
        agent.limits,
        () => agent.watcher.activity,
        config.replication.resync === true ? 'asked for (--resync)' : undefined,
      );
    } catch (err) {
      await agent.watcher.close();
      throw err;
    }
    agent.noteGeneration(agent.session.newGeneration);
    agent.running = agent.run();
    config.log.info(
      { vm: config.vm, generation: agent.session.generation, lsn: agent.session.lsn, disks: config.disks.length },
      'watch agent started',
    );
    return agent;
  }

  private onChange(): void {
    this.lastChange = Date.now();
    this.pendingSince ??= this.lastChange;
    this.wake?.();
  }

  /** Milliseconds until the next scan is due (0 or less: now). */
  private untilDue(now: number): number {
    if (this.retryAt !== undefined) return this.retryAt - now;
    if (this.pendingSince !== undefined)
      return Math.min(this.lastChange + this.limits.debounceMs, this.pendingSince + this.limits.maxDelayMs) - now;
    return this.lastScanEnd + this.limits.rescanIntervalMs - now;
  }

  private async run(): Promise<void> {
    let first = true;
    while (!this.closing) {
      const wait = first ? 0 : this.untilDue(Date.now());
      if (wait > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait);
          this.wake = () => (clearTimeout(timer), resolve());
        });
        this.wake = undefined;
        continue;
      }
      first = false;
      // Changes seen until now are in what this scan reads.
      this.pendingSince = undefined;
      this.retryAt = undefined;
      await this.scanOnce();
    }
  }

  private async scanOnce(): Promise<void> {
    this.scanning = true;
    try {
      this.session ??= await this.openSession(undefined);
      this.recordScan(await this.session.scan());
    } catch (err) {
      if (this.closing) return;
      if (err instanceof DiskResized) await this.restartGeneration(err.message);
      else this.scanFailed(err);
    } finally {
      this.scanning = false;
      this.lastScanEnd = Date.now();
    }
  }

  private recordScan(r: ScanReport): void {
    this.scans++;
    this.lastScan = r;
    if (r.markerLsn !== undefined) this.lastMarkerLsn = r.markerLsn;
    if (this.failure !== undefined)
      this.config.log.info({ attempts: this.failure.attempts }, 'watch: scans read again');
    this.failure = undefined;
    this.backoff.reset();
    if (r.clean) {
      this.cleanScans++;
      if (this.lastMarkerLsn !== undefined)
        this.lastClean = { endedAt: r.endedAt, lsn: this.lastMarkerLsn, blocksChanged: r.blocksChanged };
    } else {
      // Not a consistent moment: scan again once the images have been quiet for the debounce.
      this.pendingSince ??= Date.now();
      this.lastChange = Math.max(this.lastChange, r.modifiedMs);
    }
    this.config.log.debug({ ...r }, 'watch: scan ended');
  }

  private scanFailed(err: unknown): void {
    const delay = this.backoff.next();
    const now = Date.now();
    this.retryAt = now + delay;
    this.failure = {
      code: isSrError(err) ? err.code : (systemErrorCode(err) ?? ErrorCode.IO),
      message: (err as Error).message,
      attempts: this.backoff.attempts,
      at: new Date(now).toISOString(),
      nextRetryAt: new Date(this.retryAt).toISOString(),
    };
    this.config.log.error(
      { code: this.failure.code, err: this.failure.message, attempts: this.failure.attempts, retryInMs: delay },
      'watch: scan failed; it is retried',
    );
  }

  /**
   * A disk's size left the generation's layout, which the stream cannot change: the session ends and a new
   * one begins a new generation with the new layout, whose first scan sends every block.
   */
  private async restartGeneration(why: string): Promise<void> {
    this.config.log.warn({ why }, 'watch: a disk was resized; starting a new generation');
    const old = this.session;
    this.session = undefined;
    await old?.close(this.config.log);
    try {
      this.session = await this.openSession(undefined);
      this.lastMarkerLsn = undefined;
      this.lastClean = undefined;
      // The next turn scans at once: the new generation's replica is empty until then.
      this.pendingSince = Date.now();
      this.lastChange = 0;
    } catch (err) {
      this.scanFailed(err);
    }
  }

  private async openSession(resync: string | undefined): Promise<WatchSession> {
    const s = await WatchSession.open(this.config, this.limits, () => this.watcher.activity, resync);
    this.noteGeneration(s.newGeneration);
    return s;
  }

  private noteGeneration(reason: string | undefined): void {
    if (reason !== undefined) this.newGeneration = { at: new Date().toISOString(), reason };
  }

  status(): WatchAgentStatus {
    const s = this.session;
    const state: WatchStatus['state'] = this.scanning
      ? 'scanning'
      : this.failure !== undefined
        ? 'failed'
        : this.pendingSince !== undefined
          ? 'pending'
          : 'idle';
    const watch: WatchStatus = {
      disks: s?.diskList() ?? this.config.disks.map((d) => ({ id: d.id, path: d.path, size: 0 })),
      blockBytes: this.limits.blockBytes,
      debounceMs: this.limits.debounceMs,
      maxDelayMs: this.limits.maxDelayMs,
      rescanIntervalMs: this.limits.rescanIntervalMs,
      state,
      ...(this.pendingSince !== undefined ? { pendingSince: new Date(this.pendingSince).toISOString() } : {}),
      scans: this.scans,
      cleanScans: this.cleanScans,
      ...(this.lastScan !== undefined ? { lastScan: this.lastScan } : {}),
      ...(this.lastClean !== undefined ? { lastCleanScan: this.lastClean } : {}),
      ...(this.failure !== undefined ? { failure: this.failure } : {}),
      ...(this.newGeneration !== undefined ? { newGeneration: this.newGeneration } : {}),
    };
    return {
      vm: this.config.vm,
      mode: { state: 'watch', since: this.startedAt },
      lsn: s?.lsn ?? 0,
      journal: s?.journalStats() ?? emptyJournal(),
      ...(s !== undefined ? { replication: s.replicationStatus(this.failure !== undefined) } : {}),
      watch,
    };
  }

  health(): AgentHealth {
    return watchHealthOf(this.status(), {
      disconnectedMs: this.config.health?.disconnectedMs ?? DEFAULT_HEALTH_DISCONNECTED_MS,
    });
  }

  /** Stops scanning and shipping; the sums of what was journaled are saved for the next start. */
  close(): Promise<void> {
    this.closed ??= this.shutDown();
    return this.closed;
  }

  private async shutDown(): Promise<void> {
    this.closing = true;
    this.session?.stopScanning();
    this.wake?.();
    await this.running;
    await this.watcher.close();
    await this.session?.close(this.config.log);
    this.config.log.info({ vm: this.config.vm, lsn: this.session?.lsn }, 'watch agent stopped');
  }
}

/** The journal's figures while no session holds one (between generations). */
function emptyJournal(): WatchAgentStatus['journal'] {
  return {
    firstLsn: 1,
    lastLsn: 0,
    syncedLsn: 0,
    segments: 0,
    bytes: 0,
    failed: undefined,
    stalled: false,
    maxBytes: 0,
    segmentBytes: 0,
    directWrites: false,
  };
}
