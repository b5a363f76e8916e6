import { DIRECT_IO_ALIGNMENT, alignUp, allocAligned } from '../direct-io.js';

/** Limits of a {@link PayloadPool}. */
export interface PayloadPoolOptions {
  /** Size of one slab; payloads larger than a quarter of it get a buffer of their own. Default 8 MiB. */
  readonly slabBytes?: number;
  /** Slabs kept at most; when all are in use, payloads get buffers of their own. Default 16 (128 MiB). */
  readonly maxSlabs?: number;
}

const DEFAULT_SLAB_BYTES = 8 * 1024 * 1024;
const DEFAULT_MAX_SLABS = 16;

/** A payload buffer and the call that hands its memory back; `release` is idempotent. */
export interface Payload {
  readonly buf: Buffer;
  release(): void;
}

interface Slab {
  readonly mem: Buffer;
  used: number;
  live: number;
  retired: boolean;
}

const OWN: Payload['release'] = () => undefined;

/**
 * Memory for WRITE payloads that span socket chunks, carved from a few long-lived slabs. Every
 * fresh Buffer of a megabyte counts as external memory to V8, and at a few hundred MB/s of writes
 * that alone drove several full garbage collections a second (measured: 14 per second at 190 MB/s
 * of 1 MiB writes). A slab is reused once every payload carved from it has been released, so the
 * steady state allocates nothing.
 *
 * Slabs are page-aligned memory, and payloads of a page and more start on a page boundary: the
 * journal writes those with O_DIRECT straight from here instead of copying them into its own
 * buffer (DirectAppender).
 *
 * Contract: a payload is released only when nothing will read it again — for a WRITE, once the
 * backend's `write` has settled (backends must not keep `data` past that; see BlockBackend).
 */
export class PayloadPool {
  private readonly slabBytes: number;
  private readonly maxSlabs: number;
  private readonly free: Slab[] = [];
  private current: Slab | undefined;
  private slabs = 0;

  constructor(options: PayloadPoolOptions = {}) {
    this.slabBytes = options.slabBytes ?? DEFAULT_SLAB_BYTES;
    this.maxSlabs = options.maxSlabs ?? DEFAULT_MAX_SLABS;
  }

  alloc(n: number): Payload {
    if (n > this.slabBytes / 4) return { buf: Buffer.allocUnsafe(n), release: OWN };
    let slab = this.current;
    if (slab !== undefined && n >= DIRECT_IO_ALIGNMENT) slab.used = alignUp(slab.used); // page payloads on a page
    if (slab === undefined || slab.used + n > this.slabBytes) {
      if (slab !== undefined) this.retire(slab);
      slab = this.free.pop() ?? this.newSlab();
      this.current = slab;
      if (slab === undefined) return { buf: Buffer.allocUnsafe(n), release: OWN };
    }
    const at = slab.used;
    slab.used += (n + 7) & ~7; // some copies are faster 8-byte aligned, and it costs little
    slab.live++;
    let released = false;
    const s = slab;
    return {
      buf: s.mem.subarray(at, at + n),
      release: () => {
        if (released) return;
        released = true;
        s.live--;
        if (s.live !== 0) return;
        if (s.retired) this.recycle(s);
        else if (s === this.current) s.used = 0; // all of it is free again: start over at the front
      },
    };
  }

  /** Slabs allocated so far (for status and tests). */
  get slabCount(): number {
    return this.slabs;
  }

  private newSlab(): Slab | undefined {
    if (this.slabs >= this.maxSlabs) return undefined;
    this.slabs++;
    return { mem: allocAligned(this.slabBytes), used: 0, live: 0, retired: false };
  }

  private retire(slab: Slab): void {
    slab.retired = true;
    if (slab.live === 0) this.recycle(slab);
  }

  private recycle(slab: Slab): void {
    slab.used = 0;
    slab.retired = false;
    this.free.push(slab);
  }
}
