import fsp from 'node:fs/promises';
import path from 'node:path';
import { fsyncDir, type Logger } from '@site-recovery/shared';

/** Control API actions that change something; each one is audited. */
export type AuditAction =
  | 'configure'
  | 'failover'
  | 'test-failover'
  | 'test-failover-cleanup'
  | 'commit'
  | 'configure-group'
  | 'group-failover'
  | 'group-test-failover'
  | 'group-test-failover-cleanup';

/** What an action was about: one VM, or a replication group and its members at the time. */
export type AuditSubject = { readonly vm: string } | { readonly group: string; readonly members: readonly string[] };

/** ok: done; refused: the processor said no with a code (4xx); failed: it tried and could not (5xx). */
export type AuditOutcome = 'ok' | 'refused' | 'failed';

/** One action, as its line records it. */
export type AuditedAction = AuditSubject & {
  readonly action: AuditAction;
  /** Undefined when the control API runs without authentication (--insecure). */
  readonly caller: { readonly id: string; readonly role: string } | undefined;
  readonly outcome: AuditOutcome;
  readonly code?: string;
};

/** One refused credential. */
export interface AuditedRefusal {
  /** The id the credential claims (unverified: it failed), when it could be read. */
  readonly claimedId: string | undefined;
  readonly code: string;
  readonly method: string;
  readonly path: string;
  readonly remote: string | undefined;
}

/**
 * Refused credentials waiting to be written beyond which more are counted, not queued: a flood of
 * bad requests must not grow memory without bound or keep the disk busy with their lines.
 */
export const DEFAULT_MAX_PENDING_REFUSALS = 1000;

interface Batch {
  readonly lines: string[];
  refusals: number;
  readonly done: Promise<void>;
  resolve(): void;
  reject(err: unknown): void;
}

function newBatch(): Batch {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const done = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A refusal's line is written in the background; nobody awaits its batch.
  done.catch(() => undefined);
  return { lines: [], refusals: 0, done, resolve, reject };
}

/**
 * The control API's audit log: one JSON line per action that changes something (who, what, which
 * VM or group and its members, how it ended) and per refused credential (the id it claims, why, from where), appended and
 * fdatasynced before an action is answered. It never holds a token or a proof: only ids and codes.
 * Lines that arrive while a write is in progress go out together in the next one (one fdatasync).
 */
export class AuditLog {
  private next: Batch | undefined;
  private writing = false;
  /** The latest drain (what `close` waits for). */
  private draining: Promise<void> = Promise.resolve();
  private dropped = 0;
  private closed = false;

  private constructor(
    readonly file: string,
    private readonly fh: fsp.FileHandle,
    private readonly log: Logger,
    private readonly maxPendingRefusals: number,
  ) {}

  /** Opens (creating it 0600 if needed) the log at `file` for appending. */
  static async open(file: string, log: Logger, maxPendingRefusals = DEFAULT_MAX_PENDING_REFUSALS): Promise<AuditLog> {
    const dir = path.dirname(file);
    await fsp.mkdir(dir, { recursive: true });
    const fh = await fsp.open(file, 'a', 0o600);
    await fsyncDir(dir);
    return new AuditLog(file, fh, log, maxPendingRefusals);
  }

  /** Records an action; resolves once its line is durable (never rejects: a failure is logged). */
  async action(a: AuditedAction): Promise<void> {
    const line = {
      time: new Date().toISOString(),
      action: a.action,
      ...('vm' in a ? { vm: a.vm } : { group: a.group, members: a.members }),
      callerId: a.caller?.id ?? null,
      callerRole: a.caller?.role ?? null,
      outcome: a.outcome,
      code: a.code ?? null,
    };
    try {
      await this.append(JSON.stringify(line), false);
    } catch (err) {
      this.log.error({ file: this.file, action: a.action, err: (err as Error).message }, 'cannot write the audit log');
    }
  }

  /** Records a refused credential in the background. */
  refusal(r: AuditedRefusal): void {
    const line = {
      time: new Date().toISOString(),
      action: 'authenticate',
      callerId: r.claimedId ?? null,
      outcome: 'refused',
      code: r.code,
      method: r.method,
      path: r.path,
      remote: r.remote ?? null,
    };
    this.append(JSON.stringify(line), true).catch((err: unknown) =>
      this.log.error({ file: this.file, err: (err as Error).message }, 'cannot write the audit log'),
    );
  }

  /** Writes what is queued, then closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.draining;
    await this.fh.close();
  }

  private append(line: string, isRefusal: boolean): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the audit log is closed'));
    const b = (this.next ??= newBatch());
    if (isRefusal) {
      if (b.refusals >= this.maxPendingRefusals) {
        this.dropped++;
        return b.done;
      }
      b.refusals++;
    }
    b.lines.push(line + '\n');
    if (!this.writing) this.draining = this.drain();
    return b.done;
  }

  /** Writes batches until none is waiting (never rejects: each batch's waiters get its failure). */
  private async drain(): Promise<void> {
    // Set and cleared in the same turns as the queue is checked, so no line is left behind.
    this.writing = true;
    while (this.next !== undefined) {
      const b = this.next;
      this.next = undefined;
      if (this.dropped > 0) {
        const time = new Date().toISOString();
        const note = { time, action: 'authenticate', outcome: 'refused', code: 'SR_LIMIT', notRecorded: this.dropped };
        b.lines.push(JSON.stringify(note) + '\n');
        this.dropped = 0;
      }
      try {
        await this.fh.appendFile(b.lines.join(''));
        await this.fh.datasync();
        b.resolve();
      } catch (err) {
        b.reject(err);
      }
    }
    this.writing = false;
  }
}
