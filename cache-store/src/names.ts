import path from 'node:path';
import { ID_PATTERN, checkId, lsnFileName, parseLsnFileName } from '@site-recovery/shared';

/**
 * Every name the cache-store gives a file in its data directory is built and parsed here, and nowhere else.
 *
 * <data-dir>/
 *   .health-probe               written, synced and deleted by each GET /health
 *   .space-reserve              zeroes held back so releases can be recorded on a full disk (log/space-reserve.ts)
 *   vms/
 *     <vm>/                     one directory per VM (the VM name passed the id pattern)
 *       meta.json               generation, disks and applied LSN of the stream held
 *       0000000000000001.srs    segment whose first frame starts at LSN 1 (16 hex digits)
 *
 * Generations are deliberately not part of any name: their pattern admits "." and "..". A segment
 * records its generation in its header instead (segment-format.ts).
 */
export const VMS_DIR = 'vms';
export const META_FILE = 'meta.json';
export const HEALTH_PROBE_FILE = '.health-probe';
export const RESERVE_FILE = '.space-reserve';
const SEGMENT_EXT = 'srs';

export function healthProbeFile(dataDir: string): string {
  return path.join(dataDir, HEALTH_PROBE_FILE);
}

export function reserveFile(dataDir: string): string {
  return path.join(dataDir, RESERVE_FILE);
}

export function vmsDir(dataDir: string): string {
  return path.join(dataDir, VMS_DIR);
}

/** The directory of one VM; the name is checked again here because it becomes a path. */
export function vmDir(dataDir: string, vm: string): string {
  return path.join(vmsDir(dataDir), checkId('VM name', vm));
}

/** The VM named by an entry of the vms directory, or `undefined` for anything else. */
export function parseVmDirName(name: string): string | undefined {
  return ID_PATTERN.test(name) ? name : undefined;
}

export function metaFile(dir: string): string {
  return path.join(dir, META_FILE);
}

export function segmentFileName(firstLsn: number): string {
  return lsnFileName(firstLsn, SEGMENT_EXT);
}

export function segmentFile(dir: string, firstLsn: number): string {
  return path.join(dir, segmentFileName(firstLsn));
}

/** The first LSN named by a segment file, or `undefined` for any other file. */
export function parseSegmentFileName(name: string): number | undefined {
  return parseLsnFileName(name, SEGMENT_EXT);
}
