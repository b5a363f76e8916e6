import chokidar, { type FSWatcher } from 'chokidar';
import type { Logger } from '@site-recovery/shared';

/**
 * Change events on the watched images (chokidar over inotify). It only counts and timestamps them: the
 * scan, not the event, says what changed, so a lost or merged event costs at most a later scan (and the
 * rescan interval bounds that). Raw events count too: chokidar drops a 'change' whose modification time
 * did not move (two writes within one tick of the kernel's coarse clock), and a scan must not be called
 * clean past such a write.
 */
export class ChangeWatcher {
  private watcher: FSWatcher | undefined;
  private count = 0;
  private last: number | undefined;

  constructor(
    private readonly paths: readonly string[],
    private readonly onEvent: () => void,
    private readonly log: Logger,
  ) {}

  /** Resolves once the images are watched: from then on every change is seen. */
  async start(): Promise<void> {
    const w = chokidar.watch([...this.paths], { ignoreInitial: true, persistent: true });
    this.watcher = w;
    const note = (): void => {
      this.count++;
      this.last = Date.now();
      this.onEvent();
    };
    w.on('raw', note).on('change', note).on('add', note).on('unlink', note);
    w.on('error', (err) => this.log.warn({ err: (err as Error).message }, 'watch: watching the images failed'));
    await new Promise<void>((resolve) => w.once('ready', () => resolve()));
  }

  /** Events seen since the start; a scan compares it before and after. */
  get activity(): number {
    return this.count;
  }

  /** When the last event arrived (ms since the epoch), if any did. */
  get lastEventAt(): number | undefined {
    return this.last;
  }

  async close(): Promise<void> {
    await this.watcher?.close();
  }
}
