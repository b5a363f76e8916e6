import { Backoff, type BackoffOptions, type Logger } from '@site-recovery/shared';
import {
  beginGeneration,
  forgetGeneration,
  settleWithoutGeneration,
  writeCheckpoint,
  type StateStore,
} from '../agent-state.js';
import type { CaptureBackend, LsnSequence } from '../backend/capture-filter.js';
import type { Checkpointer } from '../checkpointer.js';
import type { WriteGate } from '../group/write-gate.js';
import type { FileJournal, FileJournalOptions } from '../journal/file-journal.js';
import type { AgentJournal } from './agent-journal.js';
import type { GenerationReason } from './generation-cause.js';
import {
  emptyRetiredJournal,
  openNewJournal,
  removeRetiredJournal,
  restoreRetiredJournal,
  retireJournal,
} from './journal-retirement.js';
import type { WritePause } from './write-pause.js';

/**
 * Spacing of attempts at a new generation: a failed attempt is retried after it, and a generation that
 * ends again soon after it began (a cause that keeps coming back, such as a journal disk that fails
 * every write) waits it before the next, so the copies do not follow each other back to back. Reset
 * once a generation outlives the longest delay. Default 1 s doubling to 5 min.
 */
export const DEFAULT_GENERATION_RETRY: BackoffOptions = { initialDelayMs: 1000, maxDelayMs: 300_000, jitter: 0.2 };

/** How often the hold of a group round is looked at while a cut waits for it to end (at most its timeout). */
const GATE_POLL_MS = 5;

export interface GenerationSwitchOptions {
  readonly dataDir: string;
  readonly journalOptions: FileJournalOptions | undefined;
  readonly journal: AgentJournal;
  readonly lsns: LsnSequence;
  readonly captures: readonly CaptureBackend[];
  readonly pause: WritePause;
  /** The VM's replication-group barrier, when it belongs to a group. */
  readonly gate: WriteGate | undefined;
  readonly state: StateStore;
  readonly checkpointer: Checkpointer;
  /** With a cache-store a new generation begins; without one the generation is forgotten (the next replicated start begins one). */
  readonly replicating: boolean;
  /** Stops the running generation's parts (shipper, initial copy, app-consistent points). */
  readonly stopReplication: () => Promise<void>;
  /** Starts the parts of the generation the state now holds. */
  readonly startReplication: () => void;
  readonly retry?: BackoffOptions;
  readonly log: Logger;
}

/** A new generation decided and not begun yet, as the status shows it. */
export interface PendingGeneration extends GenerationReason {
  readonly since: string;
  /** Attempts that failed so far. */
  readonly attempts: number;
  readonly lastError?: string;
  readonly nextAttemptAt?: string;
  /** It cannot begin while the agent runs (a disk failed); the next start begins it. */
  readonly atNextStart?: string;
}

interface Pending {
  readonly reason: GenerationReason;
  readonly since: number;
  attempts: number;
  lastError?: string;
  nextAt?: number;
  atNextStart?: string;
  readonly done: Promise<void>;
  readonly finish: () => void;
}

/**
 * Begins a new generation while the VM keeps writing (DESIGN.md invariant 5), when continuity is lost
 * at run time. The cut:
 * 1. the generation is forgotten on disk first (`pendingGeneration`): from here a crash makes the next
 *    start begin one, and the old journal is never continued. (A failed journal's disk may be full: then
 *    this waits for step 4, and the renamed journal directory marks the switch meanwhile.)
 * 2. the old generation's parts stop (shipper, copy); writers are let past the journal's cap meanwhile
 *    (the VM's new writes wait if it is full), since no acknowledgement will make room any more;
 * 3. the VM's write-type requests and flushes wait at the write pause; those already past it complete
 *    (in the old journal, onto the images), as does a group round holding replies;
 * 4. the journal directory is renamed aside (a failed journal is closed and its files removed, giving its
 *    space back) and a new journal opened in its place; the LSN sequence restarts at 0 and the capture
 *    backends forget the old numbers, all with nothing in flight; the held requests go on, taking LSNs
 *    from 1 in the new journal. The VM waited for the writes in flight, a rename and a segment creation;
 * 5. checkpoint 0, then the new generation in the state, then its parts start: the initial copy reads
 *    every chunk under write order, so every write of the old generation reaches the replica through
 *    the copy and every later one through the stream, in order. Nothing the VM wrote is lost, and
 *    acknowledged flushes stay covered: their writes are in the images, which were synced.
 * The old journal is closed and removed afterwards, off the VM's path.
 */
export class GenerationSwitch {
  private pending: Pending | undefined;
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private cleanup: Promise<void> = Promise.resolve();
  private readonly backoff: Backoff;
  private lastBegunAt = 0;
  private closed = false;

  constructor(private readonly o: GenerationSwitchOptions) {
    this.backoff = new Backoff(o.retry ?? DEFAULT_GENERATION_RETRY);
  }

  /** A new generation is decided and not begun: group rounds are refused meanwhile. */
  get switching(): boolean {
    return this.pending !== undefined;
  }

  /**
   * Begins a new generation for `reason`, unless one is already on its way (then `reason` is logged
   * and joins it). Resolves once it has begun (or the agent stops); never rejects: failures are
   * retried with backoff and shown in {@link status}.
   */
  request(reason: GenerationReason): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.pending !== undefined) {
      if (this.pending.reason.cause !== reason.cause || this.pending.reason.message !== reason.message)
        this.o.log.info({ cause: reason.cause }, `also: ${reason.message} (a new generation is already on its way)`);
      return this.pending.done;
    }
    let finish!: () => void;
    const done = new Promise<void>((resolve) => (finish = resolve));
    this.pending = { reason, since: Date.now(), attempts: 0, done, finish };
    const what = this.o.replicating ? 'starting a new replication generation' : 'starting the journal over';
    this.o.log.warn({ cause: reason.cause }, `continuity lost, ${what}: ${reason.message}`);
    const max = this.o.retry?.maxDelayMs ?? DEFAULT_GENERATION_RETRY.maxDelayMs!;
    const lastLongAgo = this.lastBegunAt === 0 || Date.now() - this.lastBegunAt > max;
    if (lastLongAgo) this.backoff.reset();
    const delay = lastLongAgo ? 0 : this.backoff.next();
    this.schedule(delay);
    return done;
  }

  status(): PendingGeneration | undefined {
    const p = this.pending;
    if (p === undefined) return undefined;
    return {
      ...p.reason,
      since: new Date(p.since).toISOString(),
      attempts: p.attempts,
      ...(p.lastError !== undefined ? { lastError: p.lastError } : {}),
      ...(p.nextAt !== undefined ? { nextAttemptAt: new Date(p.nextAt).toISOString() } : {}),
      ...(p.atNextStart !== undefined ? { atNextStart: p.atNextStart } : {}),
    };
  }

  /** Stops retrying and waits for an attempt under way and the old journal's removal. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.running;
    await this.cleanup;
    this.pending?.finish();
  }

  private schedule(delayMs: number): void {
    const p = this.pending!;
    p.nextAt = delayMs > 0 ? Date.now() + delayMs : undefined;
    this.timer = setTimeout(() => {
      p.nextAt = undefined;
      this.running = this.attempt(p).finally(() => (this.running = undefined));
    }, delayMs);
  }

  private async attempt(p: Pending): Promise<void> {
    if (this.closed) return;
    try {
      const waits = await this.cut(p);
      if (waits !== undefined) {
        p.atNextStart = waits;
        this.o.log.error({ cause: p.reason.cause }, `the new generation begins at the next start: ${waits}`);
        return;
      }
      this.lastBegunAt = Date.now();
      this.pending = undefined;
      p.finish();
    } catch (err) {
      p.attempts++;
      p.lastError = (err as Error).message;
      const delay = this.backoff.next();
      this.o.log.error(
        { cause: p.reason.cause, attempts: p.attempts, err: p.lastError, retryInMs: delay },
        'beginning a new generation failed; retrying',
      );
      if (!this.closed) this.schedule(delay);
    }
  }

  /** One attempt; resolves to why it must wait for the next start, if it must. */
  private async cut(p: Pending): Promise<string | undefined> {
    const o = this.o;
    await this.cleanup;
    // The old generation's parts leave the agent at once (the status no longer asks them).
    const stopped = o
      .stopReplication()
      .catch((err: unknown) => o.log.warn({ err: (err as Error).message }, 'stopping the old generation failed'));
    // Forgotten on disk before anything else changes, unless the journal failed: its disk may be full,
    // and the journal's directory renamed aside marks the switch until its files are gone (see below).
    if (o.journal.current.stats().failed === undefined) await this.forget(p);
    await o.checkpointer.pause();
    let old: FileJournal | undefined;
    try {
      o.journal.openCap(() => o.pause.pause());
      await stopped;
      const failed = o.captures.flatMap((c, i) => (c.failure() !== undefined ? [i] : []));
      if (failed.length > 0) {
        // The failed image lacks a journaled write that only a restart replays: a copy read from it now
        // would miss that write. Writes to it are refused until then anyway.
        await this.forget(p);
        return `disk index ${failed.join(', ')} failed (see imageFailures) and refuses writes until the agent restarts`;
      }
      old = await this.swapJournal(p);
    } finally {
      o.journal.closeCap();
      o.pause.resume();
      if (old === undefined) o.checkpointer.resume();
    }
    await writeCheckpoint(o.dataDir, 0);
    const next = o.replicating
      ? beginGeneration(o.state.state, p.reason)
      : settleWithoutGeneration(o.state.state, p.reason);
    await o.state.replace(next);
    o.checkpointer.resume({ lsn: 0, keepsNoBacklog: !o.replicating });
    if (o.replicating) o.startReplication();
    o.log.warn(
      { generation: next.replication?.generation, cause: p.reason.cause, heldRequests: o.pause.held },
      o.replicating ? 'new replication generation begun' : 'the journal started over',
    );
    this.cleanup = this.removeOld(old);
    return undefined;
  }

  private async forget(p: Pending): Promise<void> {
    const s = this.o.state.state;
    if (s.pendingGeneration === undefined) await this.o.state.replace(forgetGeneration(s, p.reason));
  }

  /** Steps 3 and 4 of the cut; resolves to the journal let go. */
  private async swapJournal(p: Pending): Promise<FileJournal> {
    const o = this.o;
    o.pause.pause();
    await o.pause.settled();
    while (o.gate?.holding === true) await new Promise((resolve) => setTimeout(resolve, GATE_POLL_MS));
    await Promise.all(o.captures.map((c) => c.drained()));
    const old = o.journal.current;
    const moved = await retireJournal(o.dataDir);
    if (old.stats().failed !== undefined && this.closedJournal !== old) {
      // A failed journal takes no more writes, and a full disk is its usual failure: it is closed and its
      // files removed before anything else needs space. The empty directory still marks the switch.
      this.closedJournal = old;
      await old.close().catch(() => undefined);
      await emptyRetiredJournal(o.dataDir);
    }
    await this.forget(p);
    let next: FileJournal;
    try {
      next = await openNewJournal(o.dataDir, o.journalOptions);
    } catch (err) {
      // A healthy old journal goes on as it was (the generation stays pending on disk).
      if (moved && this.closedJournal !== old) await restoreRetiredJournal(o.dataDir, o.log);
      throw err;
    }
    // From here to the end of the method nothing awaits: the cut is one step for every writer.
    o.journal.swap(next);
    o.lsns.restart();
    for (const c of o.captures) c.startOver();
    return old;
  }

  /** A journal this switch closed already (a failed one): it must not be closed twice. */
  private closedJournal: FileJournal | undefined;

  private async removeOld(old: FileJournal): Promise<void> {
    try {
      if (old !== this.closedJournal) await old.close();
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'closing the journal a new generation let go failed');
    }
    this.closedJournal = undefined;
    await removeRetiredJournal(this.o.dataDir).catch((err: unknown) =>
      this.o.log.warn({ err: (err as Error).message }, 'removing the journal a new generation let go failed'),
    );
  }
}
