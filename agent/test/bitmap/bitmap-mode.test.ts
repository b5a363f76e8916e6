import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { RecordKind, createLogger, type ChangeRecord } from '@site-recovery/shared';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CaptureBackend, LsnSequence } from '../../src/backend/capture-filter.js';
import { FileBackend } from '../../src/backend/file-backend.js';
import { BitmapMode } from '../../src/bitmap/bitmap-mode.js';
import { loadDirtyBitmap } from '../../src/bitmap/bitmap-load.js';
import { DirtyBitmap } from '../../src/bitmap/dirty-bitmap.js';
import { FileJournal } from '../../src/journal/file-journal.js';
import type { JournalCursor } from '../../src/journal/journal.js';

const KiB = 1024;
const SIZE = 8 << 20;
const CHUNK = 64 * KiB;
const CAP = 512 * KiB;
const log = createLogger('bitmap-mode-test', process.env['SR_LOG_LEVEL'] ?? 'silent');

/**
 * Stands in for shipper, cache-store and processor: reads the journal in order, applies every record
 * to an in-memory replica, and lets go of the segments it has taken, as acknowledgements and
 * checkpoints do. While `down`, it takes nothing: the journal only grows.
 */
class Link {
  readonly replica = Buffer.alloc(SIZE);
  readonly records: Omit<ChangeRecord, 'data'>[] = [];
  applied = 0;
  private down = true;
  private wake: (() => void) | undefined;
  private stopped = false;
  private running: Promise<void> | undefined;
  private cursor: JournalCursor | undefined;
  /** Goes down by itself the first time this holds, checked before each batch. */
  downWhen: (() => boolean) | undefined;

  constructor(private readonly journal: () => FileJournal) {}

  up(): void {
    this.down = false;
    this.wake?.();
    this.running ??= this.pump();
  }

  cut(): void {
    this.down = true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    this.cursor?.close();
    await this.running?.catch(() => undefined);
    this.running = undefined;
  }

  private async pump(): Promise<void> {
    this.cursor = this.journal().cursor(this.applied + 1);
    while (!this.stopped) {
      if (this.downWhen?.() === true) {
        this.downWhen = undefined;
        this.down = true;
      }
      if (this.down) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      const recs = await this.cursor.next(256 * KiB);
      if (this.stopped) break;
      this.apply(recs);
      await this.journal().releaseThrough(this.applied);
    }
  }

  private apply(recs: readonly ChangeRecord[]): void {
    for (const r of recs) {
      if (r.lsn <= this.applied) continue;
      if (r.lsn !== this.applied + 1) throw new Error(`LSN ${r.lsn} after ${this.applied}`);
      if (r.kind === RecordKind.WRITE) r.data!.copy(this.replica, r.offset);
      else if (r.kind === RecordKind.ZERO || r.kind === RecordKind.TRIM)
        this.replica.fill(0, r.offset, r.offset + r.length);
      this.records.push({ lsn: r.lsn, kind: r.kind, disk: r.disk, offset: r.offset, length: r.length });
      this.applied = r.lsn;
    }
  }
}

async function until<T>(what: string, check: () => T | undefined | false, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Rejects naming `what` unless `p` settles within `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(what)), ms))]);
}

describe('bitmap mode', () => {
  let dir: string;
  let image: string;
  let file: FileBackend;
  let journal: FileJournal;
  let lsns: LsnSequence;
  let bitmap: DirtyBitmap;
  let mode: BitmapMode;
  let capture: CaptureBackend;
  let link: Link;

  async function open(): Promise<void> {
    file = FileBackend.open(image);
    journal = await FileJournal.open(path.join(dir, 'journal'), { maxBytes: CAP, segmentBytes: 64 * KiB });
    lsns = new LsnSequence(journal.lastLsn);
    const loaded = await loadDirtyBitmap(dir, [SIZE], CHUNK, log);
    bitmap = await DirtyBitmap.open(dir, { generation: 'g1', chunkBytes: CHUNK, disks: [SIZE] }, loaded);
    mode = new BitmapMode({ journal, lsns, bitmap, log, pollMs: 5, resync: { markEveryBytes: 256 * KiB } });
    mode.resume();
    capture = new CaptureBackend(file, { disk: 0, lsns, journal, mode });
    mode.start([capture]);
  }

  async function close(): Promise<void> {
    // As the agent stops: a copy waiting for journal room must not hold up the rest.
    journal.stopWaiting();
    await link.stop();
    await mode.stop();
    await capture.drained();
    await journal.close();
    await bitmap.close();
    await file.close();
  }

  beforeEach(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'sr-bitmap-mode-'));
    image = path.join(dir, 'os.img');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, SIZE);
    await open();
    link = new Link(() => journal);
  });
  afterEach(async () => {
    await close().catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  });

  /**
   * `n` writes of random data at random offsets (some unaligned, some spanning two regions), four at
   * a time as a guest keeps a few requests in flight: the journal's size is seen as it grows.
   */
  async function writes(n: number): Promise<void> {
    let left = n;
    const one = async (): Promise<void> => {
      while (left-- > 0) {
        const length = [4 * KiB, CHUNK, 100 * KiB][Math.floor(Math.random() * 3)]!;
        const offset = Math.floor((Math.random() * (SIZE - length)) / 512) * 512;
        await capture.write(offset, randomBytes(length), false);
      }
    };
    await Promise.all([one(), one(), one(), one()]);
  }

  async function converged(): Promise<void> {
    await until('ordered streaming again', () => mode.state === 'streaming');
    await until('the link to apply every record', () => link.applied === lsns.current);
    expect(link.replica.equals(await fsp.readFile(image)), 'replica equals the source image').toBe(true);
  }

  it('lets writes past the cap go on without the link, marks them durably first, and resyncs them once the journal drains', async () => {
    await within(writes(4), 10_000, 'writes under the cap did not finish');
    expect(mode.state).toBe('streaming');
    // Six times the cap while nothing is taken from the journal.
    await within(writes(48), 10_000, 'writes past the cap waited for the link');
    expect(mode.state).toBe('bitmap');
    expect(capture.stalledWrites).toBe(0);
    // Past the cap by at most the writes that were in flight when it was reached (four of at most 100 KiB).
    expect(journal.stats().bytes).toBeLessThan(CAP + 4 * 100 * KiB + 4 * KiB);
    expect(journal.stats().stalled).toBe(false);
    const s = mode.status();
    expect(s.dirtyBytes).toBeGreaterThan(CAP);
    // What a crash now would find: every region the image changed in since the journal filled is marked.
    const onDisk = (await loadDirtyBitmap(dir, [SIZE], CHUNK, log))!;
    const start = s.resync!.startLsn;
    expect(onDisk.flag?.startLsn).toBe(start);
    const img = await fsp.readFile(image);
    const journaled = Buffer.alloc(SIZE);
    for await (const r of journal.read(1)) if (r.kind === RecordKind.WRITE) r.data!.copy(journaled, r.offset);
    for (let c = 0; c < SIZE / CHUNK; c++) {
      const differs = !img.subarray(c * CHUNK, (c + 1) * CHUNK).equals(journaled.subarray(c * CHUNK, (c + 1) * CHUNK));
      const marked = (onDisk.bits[c >> 3]! & (1 << (c & 7))) !== 0;
      if (differs) expect(marked, `chunk ${c} differs from the journal but is not marked`).toBe(true);
    }

    link.up();
    await until('the resync to start', () => mode.state !== 'bitmap');
    // The VM keeps writing while its regions are resynced.
    await within(writes(16), 10_000, 'writes during the resync did not finish');
    await converged();

    const markers = link.records.filter((r) => r.kind === RecordKind.RESYNC);
    expect(markers[0]).toMatchObject({ lsn: start });
    expect(markers[0]!.offset).toBeGreaterThan(0);
    expect(markers.at(-1)!.offset).toBe(0);
    // Between the marker that began bitmap mode and the one that ended it, nothing was journaled.
    expect(markers[1]!.lsn).toBe(markers[0]!.lsn + 1);
    expect(mode.status()).toMatchObject({ lastResync: { startLsn: start, endLsn: markers.at(-1)!.lsn } });
    expect(mode.status().dirtyBytes).toBe(0);
  });

  it('goes back to bitmap mode when the journal fills again mid-resync, and still converges', async () => {
    await within(writes(40), 10_000, 'writes past the cap waited for the link');
    expect(mode.state).toBe('bitmap');
    // Down again right after it has taken the marker that ended bitmap mode: the resync has begun.
    const entry = mode.status().resync!.startLsn;
    link.downWhen = () => link.records.some((r) => r.kind === RecordKind.RESYNC && r.lsn > entry);
    link.up();
    await until('the resync to start', () => mode.state === 'resyncing');
    await within(writes(40), 10_000, 'writes past the cap waited for the link mid-resync');
    expect(mode.state).toBe('bitmap');
    expect(mode.status().entered).toBe(2);
    link.up();
    await converged();
  });

  it('takes up bitmap mode again after a restart, from the persisted bitmap', async () => {
    await within(writes(40), 10_000, 'writes past the cap waited for the link');
    const before = mode.status();
    expect(before.state).toBe('bitmap');
    await close();
    await open();
    expect(mode.state).toBe('bitmap');
    expect(mode.status()).toMatchObject({
      since: before.since,
      dirtyBytes: before.dirtyBytes,
      resync: { startLsn: before.resync!.startLsn },
    });
    link = Object.assign(new Link(() => journal), { applied: 0 });
    link.up();
    await converged();
  });
});
