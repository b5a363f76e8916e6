import { ErrorCode, SerialQueue, SrError, readJsonIfExists, writeFileAtomic, type Logger } from '@site-recovery/shared';
import { groupTermFile } from '../names.js';
import type { TermView } from './group-messages.js';

/**
 * The highest term this member has seen, and the coordinator that used it when known. Kept on disk
 * (crash-safe replace) so that a coordinator that restarts never takes a term it or anyone it heard
 * of used before: a new term is on disk before its first PREPARE goes out.
 */
export class TermStore {
  private term = 0;
  private by: string | undefined;
  private readonly writes = new SerialQueue();
  private written = 0;

  private constructor(
    private readonly file: string,
    private readonly log: Logger,
  ) {}

  static async open(dataDir: string, log: Logger): Promise<TermStore> {
    const s = new TermStore(groupTermFile(dataDir), log);
    let doc: { term?: unknown } | undefined;
    try {
      doc = (await readJsonIfExists(s.file)) as { term?: unknown } | undefined;
    } catch (err) {
      throw s.unreadable((err as Error).message);
    }
    if (doc !== undefined) {
      if (typeof doc.term !== 'number' || !Number.isSafeInteger(doc.term) || doc.term < 0)
        throw s.unreadable('it holds no term');
      s.term = doc.term;
      s.written = doc.term;
    }
    return s;
  }

  private unreadable(why: string): SrError {
    return new SrError(
      ErrorCode.IO,
      `cannot read ${this.file} (${why}): remove it and start again; the member relearns the group's ` +
        'highest term from its peers, and they refuse a term below it',
    );
  }

  get highest(): number {
    return this.term;
  }

  /** The coordinator that used the highest term, when this member knows it. */
  get coordinator(): string | undefined {
    return this.by;
  }

  view(): TermView {
    return this.by !== undefined ? { term: this.term, by: this.by } : { term: this.term };
  }

  /** A term heard of (a heartbeat, a refusal, a PREPARE accepted); kept if it is the highest. */
  observe(term: number, by?: string): void {
    if (term > this.term) {
      this.term = term;
      this.by = by;
      void this.persist().catch((err: Error) =>
        this.log.warn(
          { term, err: err.message },
          'saving the highest group term failed; a new term is saved before use',
        ),
      );
    } else if (term === this.term && this.by === undefined) {
      this.by = by;
    }
  }

  /** Takes the term above every one seen, for `vm` as coordinator, once it is on disk. */
  async next(vm: string): Promise<number> {
    const term = this.term + 1;
    this.term = term;
    this.by = vm;
    await this.persist();
    return term;
  }

  /** Resolves once the highest term seen so far is on disk. */
  private persist(): Promise<void> {
    return this.writes.run(async () => {
      const term = this.term;
      if (term <= this.written) return;
      await writeFileAtomic(this.file, JSON.stringify({ term }) + '\n');
      this.written = term;
    });
  }
}
