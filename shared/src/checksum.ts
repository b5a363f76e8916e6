import { crc32c as nativeCrc32c } from '@node-rs/crc32';

/**
 * CRC-32C (Castagnoli) over `data`, continuing from `seed` so a header and a payload can be covered
 * without concatenating them. SIMD-accelerated by @node-rs/crc32.
 */
export function crc32c(data: Uint8Array, seed = 0): number {
  return nativeCrc32c(data, seed) >>> 0;
}
