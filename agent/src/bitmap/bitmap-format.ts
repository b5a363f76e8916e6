import { crc32c } from '@site-recovery/shared';

/**
 * On-disk layout of the dirty bitmap (`dirty-bitmap.srb`), a fixed-size file of 4 KiB pages, each with
 * its own CRC-32C, so that marking a region dirty rewrites one page in place (one aligned block write
 * and an fdatasync), never the whole file. All integers big-endian.
 *
 * Page 0, the header:
 *   0  8  magic "SRDBMP\0\x01"
 *   8  4  format version (1)
 *   12 4  page size (4096)
 *   16 4  bytes of disk per bit (the granularity)
 *   20 4  number of disks
 *   24 1  length of the generation id, then the id (up to 64 bytes)
 *   96 8  size of each disk, in disk order (at most 64 disks)
 *   4092 4 CRC-32C of bytes 0..4092
 * Page 1 + p, bits of chunks p × 32704 .. (p + 1) × 32704 − 1 (chunks of all disks in disk order, a
 * disk's first chunk right after the previous disk's last; bit `c & 7` of byte `c >> 3`):
 *   0  4  p (a page written to the wrong place does not verify)
 *   4  4088 bits
 *   4092 4 CRC-32C of bytes 0..4092
 */
export const PAGE_BYTES = 4096;
const MAGIC = Buffer.from('SRDBMP\0\x01', 'latin1');
const VERSION = 1;
const GENERATION_AT = 24;
const MAX_GENERATION_BYTES = 64;
const SIZES_AT = 96;
export const MAX_BITMAP_DISKS = 64;
const CRC_AT = PAGE_BYTES - 4;
const BITS_AT = 4;
/** Bytes of bits in one page. */
export const PAGE_BIT_BYTES = CRC_AT - BITS_AT;
export const CHUNKS_PER_PAGE = PAGE_BIT_BYTES * 8;

/** Which disks a bitmap covers, at which granularity, for which generation. */
export interface BitmapGeometry {
  readonly generation: string;
  readonly chunkBytes: number;
  /** Size of each disk in bytes, in disk order. */
  readonly disks: readonly number[];
}

/** Chunks of each disk, and where each disk's first chunk lies among all of them. */
export function chunkLayout(g: Pick<BitmapGeometry, 'chunkBytes' | 'disks'>): { bases: number[]; total: number } {
  const bases: number[] = [];
  let total = 0;
  for (const size of g.disks) {
    bases.push(total);
    total += Math.ceil(size / g.chunkBytes);
  }
  return { bases, total };
}

export function pageCount(totalChunks: number): number {
  return Math.max(1, Math.ceil(totalChunks / CHUNKS_PER_PAGE));
}

/** Bytes of the whole file: the header and every page of bits. */
export function fileBytes(totalChunks: number): number {
  return PAGE_BYTES * (1 + pageCount(totalChunks));
}

export function encodeHeader(g: BitmapGeometry): Buffer {
  const gen = Buffer.from(g.generation, 'utf8');
  if (gen.length > MAX_GENERATION_BYTES) throw new Error(`generation id ${g.generation} is too long for the bitmap`);
  if (g.disks.length > MAX_BITMAP_DISKS) throw new Error(`a bitmap covers at most ${MAX_BITMAP_DISKS} disks`);
  const b = Buffer.alloc(PAGE_BYTES);
  MAGIC.copy(b, 0);
  b.writeUInt32BE(VERSION, 8);
  b.writeUInt32BE(PAGE_BYTES, 12);
  b.writeUInt32BE(g.chunkBytes, 16);
  b.writeUInt32BE(g.disks.length, 20);
  b.writeUInt8(gen.length, GENERATION_AT);
  gen.copy(b, GENERATION_AT + 1);
  g.disks.forEach((size, i) => writeU64(b, size, SIZES_AT + 8 * i));
  b.writeUInt32BE(crc32c(b.subarray(0, CRC_AT)), CRC_AT);
  return b;
}

/** The header's geometry, or why it cannot be read. */
export function decodeHeader(b: Buffer): BitmapGeometry | string {
  if (b.length < PAGE_BYTES) return `the file is ${b.length} bytes, shorter than its header`;
  if (!b.subarray(0, 8).equals(MAGIC)) return 'not a dirty bitmap (bad magic)';
  if (b.readUInt32BE(CRC_AT) !== crc32c(b.subarray(0, CRC_AT))) return 'the header fails its checksum';
  const version = b.readUInt32BE(8);
  if (version !== VERSION) return `unsupported bitmap version ${version}`;
  if (b.readUInt32BE(12) !== PAGE_BYTES) return `unsupported page size ${b.readUInt32BE(12)}`;
  const chunkBytes = b.readUInt32BE(16);
  const n = b.readUInt32BE(20);
  const genBytes = b.readUInt8(GENERATION_AT);
  if (chunkBytes === 0 || n === 0 || n > MAX_BITMAP_DISKS || genBytes > MAX_GENERATION_BYTES)
    return 'the header holds impossible values';
  const generation = b.toString('utf8', GENERATION_AT + 1, GENERATION_AT + 1 + genBytes);
  const disks = Array.from({ length: n }, (_, i) => readU64(b, SIZES_AT + 8 * i));
  return { generation, chunkBytes, disks };
}

/** Page `p` of bits (file page 1 + p), taken from the packed bits of every chunk. */
export function encodePage(p: number, bits: Uint8Array, into: Buffer = Buffer.alloc(PAGE_BYTES)): Buffer {
  into.fill(0);
  into.writeUInt32BE(p, 0);
  const from = p * PAGE_BIT_BYTES;
  into.set(bits.subarray(from, Math.min(bits.length, from + PAGE_BIT_BYTES)), BITS_AT);
  into.writeUInt32BE(crc32c(into.subarray(0, CRC_AT)), CRC_AT);
  return into;
}

/** Copies page `p`'s bits into `bits`; a string says why the page cannot be trusted. */
export function decodePage(page: Buffer, p: number, bits: Uint8Array): string | undefined {
  if (page.readUInt32BE(CRC_AT) !== crc32c(page.subarray(0, CRC_AT))) return `page ${p} fails its checksum`;
  if (page.readUInt32BE(0) !== p) return `page ${p} holds page ${page.readUInt32BE(0)}`;
  const from = p * PAGE_BIT_BYTES;
  const n = Math.min(PAGE_BIT_BYTES, bits.length - from);
  if (n > 0) bits.set(page.subarray(BITS_AT, BITS_AT + n), from);
  return undefined;
}

/** A whole file with no bit set, for a new bitmap. */
export function encodeEmptyFile(g: BitmapGeometry): Buffer {
  const { total } = chunkLayout(g);
  const out = Buffer.alloc(fileBytes(total));
  encodeHeader(g).copy(out, 0);
  const none = new Uint8Array(0);
  for (let p = 0; p < pageCount(total); p++) encodePage(p, none, out.subarray(PAGE_BYTES * (1 + p)));
  return out;
}

function writeU64(b: Buffer, v: number, at: number): void {
  b.writeUInt32BE(Math.floor(v / 0x1_0000_0000), at);
  b.writeUInt32BE(v >>> 0, at + 4);
}

function readU64(b: Buffer, at: number): number {
  return b.readUInt32BE(at) * 0x1_0000_0000 + b.readUInt32BE(at + 4);
}
