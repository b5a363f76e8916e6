import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  ErrorCode,
  SerialQueue,
  SrError,
  closeFd,
  fdatasync,
  fsyncDir,
  pwrite,
  writeFileAtomic,
} from '@site-recovery/shared';
import { bitmapFile, bitmapModeFile } from '../names.js';
import {
  CHUNKS_PER_PAGE,
  PAGE_BYTES,
  chunkLayout,
  encodeEmptyFile,
  encodePage,
  type BitmapGeometry,
} from './bitmap-format.js';
import type { LoadedBitmap, ModeFlag } from './bitmap-load.js';

/**
 * Default bytes of disk per bit: 64 KiB. A 1 TiB disk takes 16 Mi bits, a 2 MiB file and as much
 * memory; one 4 KiB page of it covers 2 GiB of disk, so the first writes to a region rarely share a
 * page write with more than their own group. A 4 KiB write resyncs at most 64 KiB (16 times its size);
 * guests' file systems mostly write in larger extents, so far less in practice. DRBD tracks 4 KiB per
 * bit (no amplification, but 32 MiB per TiB and a bitmap write for nearly every first write); the
 * initial copy's 1 MiB chunks would make the bitmap tiny but resync 256 times a scattered 4 KiB write.
 */
export const DEFAULT_BITMAP_CHUNK_BYTES = 64 * 1024;

interface Waiter {
  readonly promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

/**
 * The persisted set of regions the VM wrote without journaling them (bitmap mode), as one bit per
 * `chunkBytes` of each disk. A region is marked durably before its write may reach the image
 * (mark-before-write), but only when its bit is newly set: marks made while a page write is under way
 * join the next one, so concurrent first writes share one page write and one fdatasync (group
 * commit, as DRBD's activity log does); a region marked already costs nothing. The file is fixed-size
 * and rewritten in place one page at a time (each page carries its own checksum), because a first
 * write waits for it: a crash-safe replace of the whole file would cost a full copy and two fsyncs.
 * A bit is cleared only after the region's copy was journaled and synced ({@link endCopy},
 * {@link persistClears}).
 */
export class DirtyBitmap {
  readonly chunkBytes: number;
  private readonly bases: readonly number[];
  private readonly total: number;
  /** Regions that still need a resync. */
  private readonly bits: Uint8Array;
  /** What the file holds, or will once the pending page writes land: `bits` plus clears not yet synced. */
  private readonly onDisk: Uint8Array;
  private dirty = 0;
  /** Generation of the page write that carries each page's latest change. */
  private readonly pageGen: Uint32Array;
  private readonly pending = new Set<number>();
  private nextGen = 1;
  private durableGen = 0;
  private readonly waiters = new Map<number, Waiter>();
  /** The writer's run while it has pages to write. */
  private flushing: Promise<void> | undefined;
  private failure: Error | undefined;
  /** Regions being copied by the resync → whether a write marked them meanwhile. */
  private readonly copying = new Map<number, boolean>();
  private clears: number[] = [];
  private syncCount = 0;
  private flagWant: ModeFlag | undefined;
  private flagWritten: Promise<void> = Promise.resolve();
  private readonly flagOps = new SerialQueue();

  private constructor(
    private readonly dataDir: string,
    readonly geometry: BitmapGeometry,
    private readonly fd: number,
    bits: Uint8Array | undefined,
    flag: ModeFlag | undefined,
    /** Why the bitmap loaded at start was not trusted (every bit is set). */
    readonly untrusted: string | undefined,
  ) {
    this.chunkBytes = geometry.chunkBytes;
    const layout = chunkLayout(geometry);
    this.bases = layout.bases;
    this.total = layout.total;
    this.bits = new Uint8Array(Math.ceil(this.total / 8));
    if (bits !== undefined) this.bits.set(bits.subarray(0, this.bits.length));
    this.onDisk = this.bits.slice();
    for (const b of this.bits) this.dirty += popcount(b);
    this.pageGen = new Uint32Array(Math.max(1, Math.ceil(this.total / CHUNKS_PER_PAGE)));
    this.flagWant = flag;
  }

  /**
   * Opens the bitmap of `geometry`, taking over what was loaded at start when it is of the same
   * generation and disks; otherwise (a first start, a new generation) starts empty in a new file.
   */
  static async open(dataDir: string, geometry: BitmapGeometry, loaded: LoadedBitmap | undefined): Promise<DirtyBitmap> {
    // An unreadable mode flag names no generation: taken for this one, so its regions all stay dirty.
    const same =
      loaded !== undefined &&
      (loaded.geometry.generation === geometry.generation ||
        (loaded.untrusted !== undefined && loaded.geometry.generation === '')) &&
      loaded.geometry.disks.length === geometry.disks.length &&
      loaded.geometry.disks.every((s, i) => s === geometry.disks[i]);
    const g = same ? { ...geometry, chunkBytes: loaded.geometry.chunkBytes } : geometry;
    const file = bitmapFile(dataDir);
    // A bitmap loaded whole is already in its file; anything else gets a new, empty file first.
    if (!same || loaded.untrusted !== undefined) await writeFileAtomic(file, encodeEmptyFile(g));
    if (!same) await fsp.rm(bitmapModeFile(dataDir), { force: true });
    const fd = fs.openSync(file, 'r+');
    const b = same
      ? new DirtyBitmap(dataDir, g, fd, loaded.bits, loaded.flag, loaded.untrusted)
      : new DirtyBitmap(dataDir, g, fd, undefined, undefined, undefined);
    // An untrusted bitmap's bits (all set) go to the new file before anything relies on them.
    if (same && loaded.untrusted !== undefined) await b.rewriteAll();
    return b;
  }

  /** Bytes of the disks marked and not yet resynced. */
  get dirtyBytes(): number {
    if (this.dirty === 0) return 0;
    let n = this.dirty * this.chunkBytes;
    // A disk's last chunk may be short.
    this.geometry.disks.forEach((size, d) => {
      const last = this.bases[d]! + Math.ceil(size / this.chunkBytes) - 1;
      if (this.isDirty(last)) n -= (last - this.bases[d]! + 1) * this.chunkBytes - size;
    });
    return n;
  }

  get dirtyChunks(): number {
    return this.dirty;
  }

  /** Page-write groups made durable (one fdatasync each) since the bitmap was opened. */
  get syncs(): number {
    return this.syncCount;
  }

  /** The flag of the mode this bitmap serves, while one is on. */
  get flag(): ModeFlag | undefined {
    return this.flagWant;
  }

  isDirty(chunk: number): boolean {
    return ((this.bits[chunk >> 3] ?? 0) & (1 << (chunk & 7))) !== 0;
  }

  /** The first dirty chunk at or after `from`, or undefined. */
  nextDirty(from: number): number | undefined {
    for (let byte = from >> 3; byte < this.bits.length; byte++) {
      const v = this.bits[byte]!;
      if (v === 0) continue;
      for (let bit = 0; bit < 8; bit++) {
        const c = byte * 8 + bit;
        if (c >= from && c < this.total && (v & (1 << bit)) !== 0) return c;
      }
    }
    return undefined;
  }

  /** Where chunk `c` lies: its disk and byte range. */
  locate(c: number): { disk: number; offset: number; length: number } {
    let disk = 0;
    while (disk + 1 < this.bases.length && this.bases[disk + 1]! <= c) disk++;
    const offset = (c - this.bases[disk]!) * this.chunkBytes;
    return { disk, offset, length: Math.min(this.chunkBytes, this.geometry.disks[disk]! - offset) };
  }

  /**
   * Marks the regions of a write. `undefined` when every one was durably marked already (the write
   * may go to the image now); else a promise that resolves once they are on stable storage.
   */
  mark(disk: number, offset: number, length: number): Promise<void> | undefined {
    if (this.failure !== undefined) return Promise.reject(this.failed());
    const base = this.bases[disk]!;
    const first = base + Math.floor(offset / this.chunkBytes);
    const last = base + Math.floor((offset + Math.max(length, 1) - 1) / this.chunkBytes);
    let gen = 0;
    for (let c = first; c <= last; c++) {
      if (this.copying.size > 0 && this.copying.has(c)) this.copying.set(c, true);
      const byte = c >> 3;
      const bit = 1 << (c & 7);
      if ((this.bits[byte]! & bit) === 0) {
        this.bits[byte]! |= bit;
        this.dirty++;
      }
      const page = Math.floor(c / CHUNKS_PER_PAGE);
      if ((this.onDisk[byte]! & bit) === 0) {
        this.onDisk[byte]! |= bit;
        gen = Math.max(gen, this.modified(page));
      } else gen = Math.max(gen, this.pageGen[page]!);
    }
    return gen > this.durableGen ? this.whenDurable(gen) : undefined;
  }

  /**
   * Turns the mode flag on (or updates it); page writes from now on wait for it to be durable, so no
   * mark ever counts as durable while a restart could take the bitmap for empty.
   */
  activate(flag: ModeFlag): void {
    this.flagWant = flag;
    this.flagWritten = this.flagOps.run(async () => {
      const want = this.flagWant;
      if (want !== undefined) await writeFileAtomic(bitmapModeFile(this.dataDir), JSON.stringify(want) + '\n');
    });
  }

  /** Removes the mode flag, unless the mode came back on meanwhile or a region is dirty again. */
  deactivate(): Promise<void> {
    if (this.dirty > 0) return Promise.resolve();
    this.flagWant = undefined;
    return this.flagOps.run(async () => {
      if (this.flagWant !== undefined) return;
      await fsp.rm(bitmapModeFile(this.dataDir), { force: true });
      await fsyncDir(path.dirname(bitmapModeFile(this.dataDir)));
    });
  }

  /** The resync starts copying chunk `c`: a write marking it from now on keeps its bit set. */
  beginCopy(c: number): void {
    this.copying.set(c, false);
  }

  /**
   * The resync's copy of chunk `c` is done; `journaled` when it reached the journal. Unless a write
   * marked the chunk meanwhile, its bit is cleared in memory now and in the file by the
   * {@link persistClears} that follows the next journal sync. Returns whether it was cleared.
   */
  endCopy(c: number, journaled: boolean): boolean {
    const touched = this.copying.get(c) ?? true;
    this.copying.delete(c);
    if (!journaled || touched || !this.isDirty(c)) return false;
    this.bits[c >> 3]! &= ~(1 << (c & 7));
    this.dirty--;
    this.clears.push(c);
    return true;
  }

  /** The clears made so far; pass them to {@link persistClears} once the journal is synced past their copies. */
  takeClears(): number[] {
    const taken = this.clears;
    this.clears = [];
    return taken;
  }

  /** Writes `clears` to the file (those not marked again since) and waits until they are durable. */
  async persistClears(clears: readonly number[]): Promise<void> {
    let gen = 0;
    for (const c of clears) {
      if (this.isDirty(c)) continue;
      const byte = c >> 3;
      const bit = 1 << (c & 7);
      if ((this.onDisk[byte]! & bit) === 0) continue;
      this.onDisk[byte]! &= ~bit;
      gen = Math.max(gen, this.modified(Math.floor(c / CHUNKS_PER_PAGE)));
    }
    if (gen > this.durableGen) await this.whenDurable(gen);
  }

  async close(): Promise<void> {
    while (this.flushing !== undefined) await this.flushing;
    await this.flagOps.run(() => Promise.resolve());
    await closeFd(this.fd);
  }

  /** Every page, as one group (an untrusted bitmap's bits set in a new file). */
  private async rewriteAll(): Promise<void> {
    let gen = 0;
    for (let p = 0; p < this.pageGen.length; p++) gen = this.modified(p);
    await this.whenDurable(gen);
  }

  /** Page `page` changed: the next group writes it. Returns that group's generation. */
  private modified(page: number): number {
    this.pageGen[page] = this.nextGen;
    this.pending.add(page);
    this.flushing ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.flush());
    return this.nextGen;
  }

  private whenDurable(gen: number): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failed());
    let w = this.waiters.get(gen);
    if (w === undefined) {
      let resolve!: () => void;
      let reject!: (err: Error) => void;
      const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
      w = { promise, resolve, reject };
      this.waiters.set(gen, w);
    }
    return w.promise;
  }

  /** The single writer: every page changed since its last group, then one fdatasync, until none is left. */
  private async flush(): Promise<void> {
    const scratch = Buffer.alloc(PAGE_BYTES);
    while (this.pending.size > 0 && this.failure === undefined) {
      const gen = this.nextGen++;
      const pages = [...this.pending].sort((a, b) => a - b);
      this.pending.clear();
      try {
        await this.flagWritten;
        for (const p of pages) await pwrite(this.fd, encodePage(p, this.onDisk, scratch), PAGE_BYTES * (1 + p));
        await fdatasync(this.fd);
        this.syncCount++;
        this.durableGen = gen;
        this.settle(gen, undefined);
      } catch (err) {
        this.failure = err instanceof Error ? err : new Error(String(err));
        this.settle(Infinity, this.failed());
      }
    }
    this.flushing = undefined;
  }

  private settle(upTo: number, err: Error | undefined): void {
    for (const [gen, w] of this.waiters) {
      if (gen > upTo) continue;
      this.waiters.delete(gen);
      if (err === undefined) w.resolve();
      else w.reject(err);
    }
  }

  private failed(): SrError {
    const f = this.failure!;
    return new SrError(
      ErrorCode.IO,
      `the dirty bitmap in ${this.dataDir} could not be written (${f.message}); writes are refused until the agent restarts`,
      { cause: f },
    );
  }
}

function popcount(b: number): number {
  let n = 0;
  for (let v = b; v !== 0; v &= v - 1) n++;
  return n;
}
