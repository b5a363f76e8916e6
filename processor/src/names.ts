import path from 'node:path';
import { ID_PATTERN, checkId } from '@site-recovery/shared';

/**
 * Every name the processor gives a file in its data directory is built and parsed here, and nowhere
 * else. VM names and disk ids arrive from the wire; they are checked against the id pattern before
 * they become path components, so a hostile peer cannot name a file outside the tree.
 *
 * <data-dir>/
 *   replicas/
 *     <vm>/
 *       state.json            generation, disk layout, applied LSN, initial-sync progress
 *       disks/
 *         <disk-id>.img       sparse raw image, the size of the source disk
 */
export const REPLICAS_DIR = 'replicas';
export const STATE_FILE = 'state.json';
export const DISKS_DIR = 'disks';
const IMAGE_SUFFIX = '.img';
/** writeFileAtomic's temporary sibling: `<target>.tmp-<pid>`. */
const TEMP_RE = /\.tmp-\d+$/;

export function replicasDir(dataDir: string): string {
  return path.join(dataDir, REPLICAS_DIR);
}

export function replicaDir(dataDir: string, vm: string): string {
  return path.join(replicasDir(dataDir), checkId('VM name', vm));
}

export function stateFile(replicaDir: string): string {
  return path.join(replicaDir, STATE_FILE);
}

export function disksDir(replicaDir: string): string {
  return path.join(replicaDir, DISKS_DIR);
}

export function diskImageFile(replicaDir: string, diskId: string): string {
  return path.join(disksDir(replicaDir), `${checkId('disk id', diskId)}${IMAGE_SUFFIX}`);
}

/** The VM a directory under `replicas/` belongs to, or `undefined` for anything that is not one. */
export function parseReplicaDirName(name: string): string | undefined {
  return ID_PATTERN.test(name) ? name : undefined;
}

/** The disk id an image file under `disks/` holds, or `undefined` for any other file. */
export function parseDiskImageName(name: string): string | undefined {
  if (!name.endsWith(IMAGE_SUFFIX)) return undefined;
  const id = name.slice(0, -IMAGE_SUFFIX.length);
  return ID_PATTERN.test(id) ? id : undefined;
}

/** A file found by listing a replica directory (a leftover to remove). */
export function replicaEntry(replicaDir: string, name: string): string {
  return path.join(replicaDir, path.basename(name));
}

/** True for a temporary file a crash during writeFileAtomic left behind. */
export function isTempFileName(name: string): boolean {
  return TEMP_RE.test(name);
}
