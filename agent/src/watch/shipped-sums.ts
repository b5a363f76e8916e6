import fsp from 'node:fs/promises';
import { BLOCK_SUM_ALGO, BLOCK_SUM_BYTES, crc32c, systemErrorCode, writeFileAtomic } from '@site-recovery/shared';

const MAGIC = Buffer.from('SRWS', 'ascii');
const VERSION = 1;

/** What a sums file must match to be used: the same stream, disk size, block size and sum function. */
export interface SumsIdentity {
  readonly generation: string;
  readonly disk: string;
  readonly size: number;
  readonly blockBytes: number;
}

/**
 * The sum of each block of one disk as a watch-mode agent last shipped it, so a scan sends only the blocks
 * whose sum differs. A block with no sum yet (a new generation: "the sums start empty") is always sent.
 * The replica holds, block for block, what was last shipped, so once every block has a sum the replica
 * after the stream's last record equals what these sums describe.
 *
 * File (`<data-dir>/watch/<disk>.sums`, replaced whole and crash-safely): "SRWS", u32 version, u32 length
 * of a JSON header ({@link SumsIdentity}, `algo`, `lsn`), one byte per block (1: has a sum), the sums
 * (`BLOCK_SUM_BYTES` each), then the CRC-32C of everything before it. `lsn` is the journal's synced LSN
 * when it was saved: only sums of records already on stable storage are ever saved, so a crash can only
 * make the agent send a block again, never skip one.
 */
export class ShippedSums {
  private constructor(
    readonly identity: SumsIdentity,
    private readonly known: Uint8Array,
    private readonly sums: Buffer,
  ) {}

  /** No block has a sum: every block is sent. */
  static empty(identity: SumsIdentity): ShippedSums {
    const count = blockCount(identity);
    return new ShippedSums(identity, new Uint8Array(count), Buffer.alloc(count * BLOCK_SUM_BYTES));
  }

  /**
   * The sums saved in `file`, or empty ones with the reason when there is none to trust (missing,
   * damaged, or made for another generation, size, block size or sum function).
   */
  static async load(file: string, identity: SumsIdentity): Promise<{ sums: ShippedSums; discarded?: string }> {
    let raw: Buffer;
    try {
      raw = await fsp.readFile(file);
    } catch (err) {
      if (systemErrorCode(err) === 'ENOENT') return { sums: ShippedSums.empty(identity) };
      throw err;
    }
    const why = (reason: string): { sums: ShippedSums; discarded: string } => ({
      sums: ShippedSums.empty(identity),
      discarded: `${file}: ${reason}; every block is sent again`,
    });
    if (raw.length < 16 || !raw.subarray(0, 4).equals(MAGIC)) return why('not a sums file');
    if (raw.readUInt32BE(raw.length - 4) !== crc32c(raw.subarray(0, raw.length - 4))) return why('checksum mismatch');
    if (raw.readUInt32BE(4) !== VERSION) return why(`unsupported version ${raw.readUInt32BE(4)}`);
    const headerBytes = raw.readUInt32BE(8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(raw.subarray(12, 12 + headerBytes).toString('utf8')) as Record<string, unknown>;
    } catch {
      return why('unreadable header');
    }
    const changed = (['generation', 'disk', 'size', 'blockBytes'] as const).find((k) => header[k] !== identity[k]);
    if (changed !== undefined) return why(`made for ${changed} ${String(header[changed])}, not ${identity[changed]}`);
    if (header['algo'] !== BLOCK_SUM_ALGO) return why(`made with ${String(header['algo'])}, not ${BLOCK_SUM_ALGO}`);
    const lsn = header['lsn'];
    if (typeof lsn !== 'number' || !Number.isSafeInteger(lsn) || lsn < 0) return why('invalid lsn');
    const count = blockCount(identity);
    const at = 12 + headerBytes;
    if (raw.length !== at + count + count * BLOCK_SUM_BYTES + 4) return why('wrong length');
    const known = new Uint8Array(raw.subarray(at, at + count));
    const sums = Buffer.from(raw.subarray(at + count, at + count + count * BLOCK_SUM_BYTES));
    return { sums: new ShippedSums(identity, known, sums) };
  }

  get blocks(): number {
    return this.known.length;
  }

  /** Whether block `i` was last shipped with exactly this sum. */
  matches(i: number, sum: Uint8Array): boolean {
    if (this.known[i] !== 1) return false;
    const at = i * BLOCK_SUM_BYTES;
    return this.sums.compare(sum, 0, BLOCK_SUM_BYTES, at, at + BLOCK_SUM_BYTES) === 0;
  }

  /** Block `i` has been journaled with this content's sum. */
  set(i: number, sum: Uint8Array): void {
    this.known[i] = 1;
    this.sums.set(sum.subarray(0, BLOCK_SUM_BYTES), i * BLOCK_SUM_BYTES);
  }

  /** Blocks that have a sum (a whole first scan gives every block one). */
  knownBlocks(): number {
    let n = 0;
    for (const k of this.known) n += k;
    return n;
  }

  /**
   * Saves the sums, stamped with `lsn`. The caller has synced the journal through every record these
   * sums describe: a saved sum whose record a crash could still cut would make that block be skipped.
   */
  async save(file: string, lsn: number): Promise<void> {
    const header = Buffer.from(JSON.stringify({ ...this.identity, algo: BLOCK_SUM_ALGO, lsn }), 'utf8');
    const head = Buffer.alloc(12);
    MAGIC.copy(head, 0);
    head.writeUInt32BE(VERSION, 4);
    head.writeUInt32BE(header.length, 8);
    const body = Buffer.concat([head, header, this.known, this.sums]);
    const tail = Buffer.alloc(4);
    tail.writeUInt32BE(crc32c(body), 0);
    await writeFileAtomic(file, Buffer.concat([body, tail]));
  }
}

function blockCount(identity: SumsIdentity): number {
  return Math.ceil(identity.size / identity.blockBytes);
}
