import { execFile } from 'node:child_process';
import { ErrorCode, RecordKind, isSrError, type Logger } from '@site-recovery/shared';
import type { LsnSequence } from '../backend/capture-filter.js';
import type { Journal } from '../journal/journal.js';

interface AppConsistentOptions {
  /** How often to take an app-consistent point; 0 is off. The processor's policy may change it. */
  readonly frequencyMs: number;
  /** Shell command that quiesces the applications (e.g. `fsfreeze -f /data`, a database flush). */
  readonly preSnapshot?: string;
  /** Shell command that resumes them (e.g. `fsfreeze -u /data`); run even when the pre command failed. */
  readonly postSnapshot?: string;
  /** Each command is killed after this long and counts as failed. Default 60 s. */
  readonly commandTimeoutMs?: number;
  readonly lsns: LsnSequence;
  readonly journal: Journal;
  readonly log: Logger;
  /**
   * Why no point could be cut now (bitmap mode or its resync: the processor cuts none), checked before
   * the pre-snapshot command: the applications are not frozen for a point that cannot be.
   */
  readonly refusal?: () => string | undefined;
}

export interface AppConsistentStatus {
  readonly frequencyMs: number;
  readonly taken: number;
  readonly failed: number;
  readonly last?: { readonly seq: number; readonly lsn: number; readonly at: string };
  readonly lastFailure?: {
    readonly seq: number;
    readonly at: string;
    /**
     * SR_APP_PRE_SNAPSHOT when the pre-snapshot command failed, SR_APP_NOT_NOW when the VM could not be
     * cut (bitmap mode, resync), else the journal's error code.
     */
    readonly code: string;
    readonly error: string;
  };
}

/** The pre-snapshot command failed, so no point was marked. */
export const PRE_SNAPSHOT_FAILED = 'SR_APP_PRE_SNAPSHOT';
/** The VM could not be cut (bitmap mode or resync), so neither command ran and no point was marked. */
export const NOT_NOW = 'SR_APP_NOT_NOW';

/**
 * Takes app-consistent points: runs the pre-snapshot command, and only if it succeeded appends an
 * APP marker to the ordered stream (the processor cuts an app-consistent point at its LSN), then runs
 * the post-snapshot command. When the pre command fails no marker is written — the points around it
 * are crash-consistent only — and the failure is reported in status and the log.
 */
export class AppConsistentSnapshots {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private seq = 0;
  private taken = 0;
  private failed = 0;
  private last: AppConsistentStatus['last'];
  private lastFailure: AppConsistentStatus['lastFailure'];

  private frequencyMs: number;
  private stopped = false;

  constructor(private readonly o: AppConsistentOptions) {
    this.frequencyMs = o.frequencyMs;
  }

  start(): void {
    clearInterval(this.timer);
    if (this.frequencyMs <= 0 || this.stopped) return; // a policy may still arrive while the agent stops
    this.timer = setInterval(() => void this.take(), this.frequencyMs);
    this.timer.unref();
  }

  /** Applies a new frequency (the replication policy changed); 0 stops taking points. */
  setFrequency(ms: number): void {
    if (ms === this.frequencyMs) return;
    this.o.log.info({ from: this.frequencyMs, to: ms }, 'app-consistent frequency changed by the replication policy');
    this.frequencyMs = ms;
    this.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
  }

  /**
   * Takes one point now (skipped if one is already being taken). Never rejects: a failure is logged
   * and kept in the status, as the timer that calls this has no one to tell.
   */
  take(): Promise<void> {
    this.running ??= this.once().finally(() => (this.running = undefined));
    return this.running;
  }

  status(): AppConsistentStatus {
    return {
      frequencyMs: this.frequencyMs,
      taken: this.taken,
      failed: this.failed,
      ...(this.last ? { last: this.last } : {}),
      ...(this.lastFailure ? { lastFailure: this.lastFailure } : {}),
    };
  }

  private async once(): Promise<void> {
    const seq = ++this.seq;
    const refused = this.o.refusal?.();
    if (refused !== undefined) {
      this.fail(seq, NOT_NOW, refused);
      this.o.log.info({ seq, reason: refused }, 'app-consistent point skipped: no point can be cut now');
      return;
    }
    const pre = this.o.preSnapshot !== undefined ? await this.run(this.o.preSnapshot) : undefined;
    try {
      if (pre !== undefined) {
        this.fail(seq, PRE_SNAPSHOT_FAILED, `pre-snapshot command failed: ${pre}`);
        this.o.log.warn(
          { seq, err: pre },
          'app-consistent point skipped: the pre-snapshot command failed; points stay crash-consistent',
        );
        return;
      }
      await this.mark(seq);
    } finally {
      if (this.o.postSnapshot !== undefined) {
        const post = await this.run(this.o.postSnapshot);
        if (post !== undefined)
          this.o.log.error({ seq, err: post }, 'post-snapshot command failed: the applications may still be frozen');
      }
    }
  }

  private async mark(seq: number): Promise<void> {
    try {
      const room = this.o.journal.room();
      if (room !== undefined) await room;
      const lsn = this.o.lsns.next();
      await this.o.journal.append({ lsn, kind: RecordKind.APP, disk: 0, offset: seq, length: 0, time: Date.now() });
      this.taken++;
      this.last = { seq, lsn, at: new Date().toISOString() };
      this.o.log.info({ seq, lsn }, 'app-consistent point marked');
    } catch (err) {
      if (isSrError(err, ErrorCode.SHUTTING_DOWN)) {
        this.o.log.info({ seq }, 'app-consistent point not taken: the agent is stopping');
        return;
      }
      const code = isSrError(err) ? err.code : ErrorCode.IO;
      this.fail(seq, code, `the marker could not be journaled: ${(err as Error).message}`);
      this.o.log.error(
        { seq, code, err: (err as Error).message },
        'app-consistent point not marked: the journal refused it',
      );
    }
  }

  private fail(seq: number, code: string, error: string): void {
    this.failed++;
    this.lastFailure = { seq, at: new Date().toISOString(), code, error };
  }

  /** Runs a shell command; resolves to an error description, or undefined on success. */
  private run(command: string): Promise<string | undefined> {
    return new Promise((resolve) => {
      execFile('/bin/sh', ['-c', command], { timeout: this.o.commandTimeoutMs ?? 60_000 }, (err, _stdout, stderr) => {
        if (err === null) resolve(undefined);
        else
          resolve(
            `${err.killed ? 'timed out' : `exit ${String(err.code)}`}${stderr ? `: ${stderr.trim().slice(0, 500)}` : ''}`,
          );
      });
    });
  }
}
