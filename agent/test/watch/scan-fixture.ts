import fsp from 'node:fs/promises';
import path from 'node:path';
import { RecordKind, createLogger, type ChangeRecord } from '@site-recovery/shared';
import { waitUntil } from '@site-recovery/test';
import { LsnSequence } from '../../src/backend/capture-filter.js';
import { FileJournal } from '../../src/journal/file-journal.js';
import { ChangeWatcher } from '../../src/watch/change-watcher.js';
import { ImageScanner } from '../../src/watch/image-scan.js';
import { ShippedSums, type SumsIdentity } from '../../src/watch/shipped-sums.js';
import { watchLimits, type WatchOptions } from '../../src/watch/watch-config.js';

export const BLOCK = 64 * 1024;
export const log = createLogger('watch-test', process.env['SR_LOG_LEVEL'] ?? 'silent');

/**
 * One image, its journal and a scanner over it. Change events come from a real chokidar watcher, or (with
 * `manualEvents`) from `events`, which a test moves itself.
 */
export class ScanFixture {
  readonly journal: FileJournal;
  readonly sums: ShippedSums;
  readonly scanner: ImageScanner;
  /** Scanned records are read back from here on. */
  private readFrom = 1;
  /** The event count when `manualEvents`. */
  events = 0;

  private constructor(
    readonly image: string,
    readonly sumsFile: string,
    readonly watcher: ChangeWatcher | undefined,
    journal: FileJournal,
    sums: ShippedSums,
    copyComplete: boolean,
    options: WatchOptions,
    onAppend: (() => void) | undefined,
  ) {
    this.journal = journal;
    this.sums = sums;
    const size = sums.identity.size;
    this.scanner = new ImageScanner({
      disks: [{ id: 'os', path: image, size, sums }],
      journal: onAppend === undefined ? journal : tapAppends(journal, onAppend),
      lsns: new LsnSequence(journal.lastLsn),
      limits: watchLimits({ blockBytes: BLOCK, readBytes: 4 * BLOCK, debounceMs: 200, ...options }),
      activity: () => watcher?.activity ?? this.events,
      copyComplete,
      persist: (lsn) => sums.save(sumsFile, lsn),
      onCopyComplete: () => Promise.resolve(),
      log,
    });
    this.readFrom = journal.lastLsn + 1;
  }

  /** Opens (or reopens) the journal and the saved sums under `dir`, and watches `image`. */
  static async open(
    dir: string,
    image: string,
    o: {
      copyComplete?: boolean;
      generation?: string;
      options?: WatchOptions;
      manualEvents?: boolean;
      /** Called before each record the scanner appends: a scan is surely running then. */
      onAppend?: () => void;
    } = {},
  ): Promise<{ fixture: ScanFixture; discarded?: string }> {
    const size = (await fsp.stat(image)).size;
    const identity: SumsIdentity = { generation: o.generation ?? 'g1', disk: 'os', size, blockBytes: BLOCK };
    const sumsFile = path.join(dir, 'os.sums');
    const loaded = await ShippedSums.load(sumsFile, identity);
    const journal = await FileJournal.open(path.join(dir, 'journal'));
    const watcher = o.manualEvents === true ? undefined : new ChangeWatcher([image], () => undefined, log);
    await watcher?.start();
    const fixture = new ScanFixture(
      image,
      sumsFile,
      watcher,
      journal,
      loaded.sums,
      o.copyComplete ?? false,
      o.options ?? {},
      o.onAppend,
    );
    return { fixture, ...(loaded.discarded !== undefined ? { discarded: loaded.discarded } : {}) };
  }

  /** The records journaled since the last call (or the open). */
  async newRecords(): Promise<ChangeRecord[]> {
    const out: ChangeRecord[] = [];
    for await (const r of this.journal.read(this.readFrom))
      out.push({ ...r, ...(r.data ? { data: Buffer.from(r.data) } : {}) });
    this.readFrom = this.journal.lastLsn + 1;
    return out;
  }

  async close(): Promise<void> {
    await this.watcher?.close();
    await this.journal.close();
  }
}

/** `journal`, with `hook` called before each append. */
function tapAppends(journal: FileJournal, hook: () => void): FileJournal {
  return new Proxy(journal, {
    get(target, prop) {
      if (prop === 'append') return (r: ChangeRecord) => (hook(), target.append(r));
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** Writes `data` at `offset` of `file` (conv=notrunc, as dd does). */
export async function writeAt(file: string, offset: number, data: Buffer): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

/** Waits until the watcher has seen an event since `from` and then no more for a while (its burst ended). */
export async function eventsSettled(watcher: ChangeWatcher, from: number): Promise<void> {
  await waitUntil('the change event of the write', () => (watcher.activity > from ? true : undefined), 10_000, 5);
  let seen = -1;
  await waitUntil(
    'the change events to stop',
    () => {
      const now = watcher.activity;
      const still = now === seen;
      seen = now;
      return still ? true : undefined;
    },
    10_000,
    100,
  );
}

/** Dates the image's modification back, as if the writer had been quiet for a while. */
export async function quiet(file: string, agoMs = 60_000): Promise<void> {
  const t = new Date(Date.now() - agoMs);
  await fsp.utimes(file, t, t);
}

/** The image a replica holds after applying `records` over `base` (each block as last shipped). */
export function applied(base: Buffer, records: readonly ChangeRecord[]): Buffer {
  const out = Buffer.from(base);
  for (const r of records) {
    if (r.kind === RecordKind.WRITE) r.data!.copy(out, r.offset);
    else if (r.kind === RecordKind.ZERO) out.fill(0, r.offset, r.offset + r.length);
  }
  return out;
}
