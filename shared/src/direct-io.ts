import fs from 'node:fs';

/**
 * Page-aligned memory for O_DIRECT I/O, which Linux refuses (EINVAL) unless the buffer's address is
 * aligned to the device's DMA alignment (512 bytes on virtio-blk). Node has no aligned allocator:
 * `Buffer.alloc` takes large buffers from malloc, 16 bytes past a page boundary. A WebAssembly
 * memory is mapped by V8 on its own pages, so its first byte sits on a page boundary.
 */
declare const WebAssembly: { Memory: new (d: { initial: number }) => { readonly buffer: ArrayBuffer } };

const WASM_PAGE = 64 * 1024;

/** Alignment of direct writes in file offset, length and memory: the page size, which covers every sector size. */
export const DIRECT_IO_ALIGNMENT = 4096;

/** The memory allocAligned handed out: a view into one of these at a page-aligned offset is page-aligned. */
const alignedMemory = new WeakSet<ArrayBufferLike>();

/** A zero-filled buffer of `bytes` (rounded up to 64 KiB) whose first byte is page-aligned. */
export function allocAligned(bytes: number): Buffer {
  const memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil(bytes / WASM_PAGE)) });
  alignedMemory.add(memory.buffer);
  return Buffer.from(memory.buffer);
}

/**
 * Whether `buf` starts on a page boundary, as O_DIRECT wants. JavaScript cannot see an address, so
 * only views into memory from allocAligned are known to: anything else answers false.
 */
export function isPageAligned(buf: Uint8Array): boolean {
  return alignedMemory.has(buf.buffer) && buf.byteOffset % DIRECT_IO_ALIGNMENT === 0;
}

export function alignUp(n: number): number {
  return Math.ceil(n / DIRECT_IO_ALIGNMENT) * DIRECT_IO_ALIGNMENT;
}

/**
 * Opens `file` with O_DIRECT added to `flags` (through `open`, which tests replace); undefined when
 * the filesystem refuses O_DIRECT (EINVAL, as tmpfs did before Linux 6.6), so the caller can go
 * through the page cache instead.
 */
export function openDirect(
  file: string,
  flags: number,
  open: (file: string, flags: number) => number = fs.openSync,
): number | undefined {
  try {
    return open(file, flags | fs.constants.O_DIRECT);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
    return undefined;
  }
}
