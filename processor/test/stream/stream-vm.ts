import type { DiskInfo } from '@site-recovery/shared';
import { MiB } from '../helpers.js';

/** The VM the stream tests replicate, and its disks: two, so that records land on the right one. */
export const VM = 'web01';
export const DISKS: DiskInfo[] = [
  { id: 'os', size: 16 * MiB },
  { id: 'data', size: 4 * MiB },
];
