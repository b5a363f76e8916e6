import fsp from 'node:fs/promises';
import type { Logger } from '@site-recovery/shared';
import { bitmapFile, bitmapModeFile } from '../names.js';
import {
  PAGE_BYTES,
  chunkLayout,
  decodeHeader,
  decodePage,
  fileBytes,
  pageCount,
  type BitmapGeometry,
} from './bitmap-format.js';

/**
 * `bitmap-mode.json`: written (crash-safe replace) before the first region is marked, removed once the
 * resync has cleared every bit. Its presence says the bitmap holds regions the stream lacks, so a
 * bitmap missing or damaged then cannot be passed over as empty.
 */
export interface ModeFlag {
  readonly generation: string;
  /** When bitmap mode was entered (ISO). */
  readonly since: string;
  /** LSN of the RESYNC marker that began this resync episode. */
  readonly startLsn: number;
}

/** What the data dir's bitmap says at start, before redo and before the VM writes. */
export interface LoadedBitmap {
  readonly geometry: BitmapGeometry;
  /** Packed bits of every chunk (see bitmap-format.ts). */
  readonly bits: Uint8Array;
  /** Present while bitmap mode (or its resync) was under way. */
  readonly flag: ModeFlag | undefined;
  /** Why the bitmap was not trusted (every bit is then set). */
  readonly untrusted?: string;
}

/**
 * The bitmap cannot say which regions the source wrote without journaling them (a damaged file, or
 * the mode flag without its bitmap). Every region of every disk counts as dirty, so redo replays
 * nothing over what bitmap mode may have written, and the reason is logged; the start then begins a new
 * replication generation for it (`bitmap-untrusted`, startup.ts), whose copy by difference makes the
 * replica whole (invariant 5).
 */
export function bitmapUntrusted(
  reason: string,
  g: Pick<BitmapGeometry, 'chunkBytes' | 'disks'>,
  log: Logger,
): Uint8Array {
  const { total } = chunkLayout(g);
  const bits = new Uint8Array(Math.ceil(total / 8)).fill(0xff);
  if (total % 8 !== 0) bits[bits.length - 1] = (1 << (total % 8)) - 1;
  log.error(
    { reason, dirtyBytes: g.disks.reduce((n, s) => n + s, 0) },
    'the dirty bitmap cannot be trusted: every region of every disk is marked dirty and will be resynced',
  );
  return bits;
}

/**
 * Reads the bitmap and its mode flag. Without the flag a bitmap that does not verify is ignored (no
 * region was marked since the last resync ended); with it, anything that does not verify (the file
 * missing, damaged, for other disks or another generation) is {@link bitmapUntrusted}. `undefined`:
 * nothing is tracked.
 */
export async function loadDirtyBitmap(
  dataDir: string,
  disks: readonly number[],
  chunkBytes: number,
  log: Logger,
): Promise<LoadedBitmap | undefined> {
  const flag = await readFlag(dataDir);
  const file = await fsp.readFile(bitmapFile(dataDir)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  const read = file === undefined ? 'the bitmap file is missing' : decodeFile(file, disks);
  if (flag === undefined) return typeof read === 'string' ? undefined : { ...read, flag: undefined };
  if (typeof flag === 'string' || typeof read === 'string' || read.geometry.generation !== flag.generation) {
    const reason =
      typeof flag === 'string'
        ? flag
        : typeof read === 'string'
          ? `${read} while bitmap mode was on`
          : `the bitmap is of generation ${read.geometry.generation}, the mode flag of ${flag.generation}`;
    const g = { chunkBytes: typeof read === 'string' ? chunkBytes : read.geometry.chunkBytes, disks: [...disks] };
    const generation = typeof flag === 'string' ? '' : flag.generation;
    const since = typeof flag === 'string' ? new Date().toISOString() : flag.since;
    const startLsn = typeof flag === 'string' ? 0 : flag.startLsn;
    return {
      geometry: { ...g, generation },
      bits: bitmapUntrusted(reason, g, log),
      flag: { generation, since, startLsn },
      untrusted: reason,
    };
  }
  return { ...read, flag };
}

function decodeFile(file: Buffer, disks: readonly number[]): { geometry: BitmapGeometry; bits: Uint8Array } | string {
  const geometry = decodeHeader(file);
  if (typeof geometry === 'string') return geometry;
  if (geometry.disks.length !== disks.length || geometry.disks.some((s, i) => s !== disks[i]))
    return `the bitmap covers disks of ${geometry.disks.join(', ')} bytes, the VM has ${disks.join(', ')}`;
  const { total } = chunkLayout(geometry);
  if (file.length !== fileBytes(total)) return `the file is ${file.length} bytes, ${fileBytes(total)} expected`;
  const bits = new Uint8Array(Math.ceil(total / 8));
  for (let p = 0; p < pageCount(total); p++) {
    const at = PAGE_BYTES * (1 + p);
    const bad = decodePage(file.subarray(at, at + PAGE_BYTES), p, bits);
    if (bad !== undefined) return bad;
  }
  return { geometry, bits };
}

/** The flag, `undefined` when absent, or why it cannot be read. */
async function readFlag(dataDir: string): Promise<ModeFlag | string | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(bitmapModeFile(dataDir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const f = JSON.parse(text) as Partial<ModeFlag>;
    if (typeof f.generation === 'string' && typeof f.since === 'string' && Number.isSafeInteger(f.startLsn))
      return { generation: f.generation, since: f.since, startLsn: f.startLsn! };
  } catch {
    // reported below
  }
  return 'the bitmap mode flag is unreadable';
}

/** The parts of `disk`'s range `offset`..`offset + length` whose chunks are clean, as [offset, length] pairs. */
export function cleanParts(b: LoadedBitmap, disk: number, offset: number, length: number): [number, number][] {
  const { chunkBytes } = b.geometry;
  const base = chunkLayout(b.geometry).bases[disk] ?? 0;
  const out: [number, number][] = [];
  const end = offset + length;
  let at = offset;
  while (at < end) {
    const chunk = Math.floor(at / chunkBytes);
    const stop = Math.min(end, (chunk + 1) * chunkBytes);
    const c = base + chunk;
    const dirty = ((b.bits[c >> 3] ?? 0) & (1 << (c & 7))) !== 0;
    if (!dirty) {
      const last = out[out.length - 1];
      if (last !== undefined && last[0] + last[1] === at) last[1] += stop - at;
      else out.push([at, stop - at]);
    }
    at = stop;
  }
  return out;
}
