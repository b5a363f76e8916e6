import fs from 'node:fs';
import type { Logger } from '../logger.js';

/** How often the revocation file is checked for changes. */
export const DEFAULT_REVOCATION_POLL_MS = 1000;

/**
 * Token ids a daemon refuses, read from a file (one id per line, `#` comments) and read again when
 * the file changes, so a leaked token is revoked without a restart. A file that cannot be read keeps
 * the last list that could (and is logged), so a bad edit or a half-written file revokes nothing less.
 */
export class RevocationList {
  private ids = new Set<string>();
  private readonly onChange: () => void;

  constructor(
    private readonly file: string | undefined,
    private readonly log: Logger,
    pollMs = DEFAULT_REVOCATION_POLL_MS,
  ) {
    this.onChange = () => this.load();
    if (file !== undefined) {
      this.load();
      fs.watchFile(file, { interval: pollMs, persistent: false }, this.onChange);
    }
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  get size(): number {
    return this.ids.size;
  }

  /** Reads the file again now (also done on every change). */
  load(): void {
    if (this.file === undefined) return;
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && this.ids.size === 0) return;
      this.log.error(
        { file: this.file, err: (err as Error).message },
        'cannot read the revoked-tokens file; keeping the last list',
      );
      return;
    }
    const next = new Set<string>();
    for (const line of text.split('\n')) {
      const id = line.replace(/#.*/, '').trim();
      if (id !== '') next.add(id);
    }
    this.ids = next;
  }

  close(): void {
    if (this.file !== undefined) fs.unwatchFile(this.file, this.onChange);
  }
}
