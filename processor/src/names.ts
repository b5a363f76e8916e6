import path from 'node:path';
import { ID_PATTERN, checkId, isWriteTempName } from '@site-recovery/shared';

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
 *       points/
 *         points.json         recovery point catalog (ids, LSNs, kinds, which undo log is whose)
 *         undo-<point-id>.log old contents of blocks first overwritten after that point
 *   retired/
 *     <vm>/
 *       <n>/                  an older replica of the VM (another disk layout), read-only, kept for its points
 *                             until retention takes the last of them; laid out as replicas/<vm>/ is. n = 1, 2, ...
 *                             in the order they were retired (never a generation: those come from the wire)
 *   staging/
 *     <vm>/                   a replica being made for a new disk layout; its state.json is written last, and
 *                             once it is there the replica is complete and is moved to replicas/<vm>/
 *   vms/
 *     <vm>/
 *       config.json           point schedule, retention, source and target placement
 *       group.json            the replication group the VM was last seen in
 *       source.json           how its agent sees its writes (`watch`: points only at clean scans)
 *       failover.json         failover state (in progress, failed over, committed)
 *       test-failover.json    what the running test failover created (for its cleanup)
 *   groups/
 *     <group>/
 *       config.json           the group's multi-VM point frequency
 *   failover/
 *     <vm>/<resource-group>/  materialised disks (<disk-id>.img) and manifest.json of a failover
 *   test-failover/
 *     <vm>/                   the same for a test failover
 */
const REPLICAS_DIR = 'replicas';
const STATE_FILE = 'state.json';
const DISKS_DIR = 'disks';
const IMAGE_SUFFIX = '.img';

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

const RETIRED_DIR = 'retired';
const STAGING_DIR = 'staging';
/** A retired replica's directory name: its sequence number, 1 to 999 999 999. */
const RETIRED_NAME = /^[1-9]\d{0,8}$/;

export function retiredRoot(dataDir: string): string {
  return path.join(dataDir, RETIRED_DIR);
}

/** Where the retired replicas of `vm` live, one directory each. */
export function retiredVmDir(dataDir: string, vm: string): string {
  return path.join(retiredRoot(dataDir), checkId('VM name', vm));
}

export function retiredReplicaDir(dataDir: string, vm: string, seq: number): string {
  if (!RETIRED_NAME.test(String(seq))) throw new Error(`not a retired replica number: ${seq}`);
  return path.join(retiredVmDir(dataDir, vm), String(seq));
}

/** The sequence number a directory under `retired/<vm>/` holds, or `undefined` for anything else. */
export function parseRetiredName(name: string): number | undefined {
  return RETIRED_NAME.test(name) ? Number(name) : undefined;
}

export function stagingRoot(dataDir: string): string {
  return path.join(dataDir, STAGING_DIR);
}

/** Where a replica of `vm` for a new disk layout is made before it takes the place of the current one. */
export function stagingDir(dataDir: string, vm: string): string {
  return path.join(stagingRoot(dataDir), checkId('VM name', vm));
}

const POINTS_DIR = 'points';
const CATALOG_FILE = 'points.json';
const UNDO_PREFIX = 'undo-';
const UNDO_SUFFIX = '.log';
const VMS_DIR = 'vms';
const VM_CONFIG_FILE = 'config.json';
const VM_GROUP_FILE = 'group.json';
const VM_SOURCE_FILE = 'source.json';
const GROUPS_DIR = 'groups';
const GROUP_CONFIG_FILE = 'config.json';
const FAILOVER_STATE_FILE = 'failover.json';
const TEST_FAILOVER_STATE_FILE = 'test-failover.json';
const FAILOVER_DIR = 'failover';
const TEST_FAILOVER_DIR = 'test-failover';
const MANIFEST_FILE = 'manifest.json';
/** Point ids are built here: `p-<lsn>-<ms since the epoch>`, optionally `-<n>` to stay unique. */
export const POINT_ID_PATTERN = /^p-\d{1,16}-\d{1,16}(?:-\d{1,4})?$/;

export function pointsDir(replicaDir: string): string {
  return path.join(replicaDir, POINTS_DIR);
}

export function catalogFile(replicaDir: string): string {
  return path.join(pointsDir(replicaDir), CATALOG_FILE);
}

export function pointId(lsn: number, timeMs: number, n = 0): string {
  return `p-${lsn}-${timeMs}${n > 0 ? `-${n}` : ''}`;
}

export function isPointId(value: string): boolean {
  return POINT_ID_PATTERN.test(value);
}

/** The file name (not path) of a point's undo log; the catalog stores names, not paths. */
export function undoLogName(pointId: string): string {
  if (!isPointId(pointId)) throw new Error(`not a point id: ${pointId}`);
  return `${UNDO_PREFIX}${pointId}${UNDO_SUFFIX}`;
}

export function undoLogFile(replicaDir: string, name: string): string {
  return path.join(pointsDir(replicaDir), path.basename(name));
}

/**
 * True for any file under `points/` named like an undo log, even one whose point id no longer parses:
 * what a crash or a removal left there, to be deleted when no point owns it.
 */
export function hasUndoLogPrefix(name: string): boolean {
  return name.startsWith(UNDO_PREFIX);
}

/** True for a file under `points/` that is an undo log. */
export function isUndoLogName(name: string): boolean {
  return (
    name.startsWith(UNDO_PREFIX) &&
    name.endsWith(UNDO_SUFFIX) &&
    isPointId(name.slice(UNDO_PREFIX.length, -UNDO_SUFFIX.length))
  );
}

export function vmsDir(dataDir: string): string {
  return path.join(dataDir, VMS_DIR);
}

export function vmStateDir(dataDir: string, vm: string): string {
  return path.join(vmsDir(dataDir), checkId('VM name', vm));
}

export function vmConfigFile(dataDir: string, vm: string): string {
  return path.join(vmStateDir(dataDir, vm), VM_CONFIG_FILE);
}

export function vmGroupFile(dataDir: string, vm: string): string {
  return path.join(vmStateDir(dataDir, vm), VM_GROUP_FILE);
}

export function vmSourceFile(dataDir: string, vm: string): string {
  return path.join(vmStateDir(dataDir, vm), VM_SOURCE_FILE);
}

export function groupsDir(dataDir: string): string {
  return path.join(dataDir, GROUPS_DIR);
}

export function groupConfigFile(dataDir: string, group: string): string {
  return path.join(groupsDir(dataDir), checkId('group name', group), GROUP_CONFIG_FILE);
}

export function failoverStateFile(dataDir: string, vm: string): string {
  return path.join(vmStateDir(dataDir, vm), FAILOVER_STATE_FILE);
}

export function testFailoverStateFile(dataDir: string, vm: string): string {
  return path.join(vmStateDir(dataDir, vm), TEST_FAILOVER_STATE_FILE);
}

export function failoverRoot(dataDir: string): string {
  return path.join(dataDir, FAILOVER_DIR);
}

/** Where the failovers of one VM go: one directory per resource group below it. */
export function vmFailoverDir(dataDir: string, vm: string): string {
  return path.join(failoverRoot(dataDir), checkId('VM name', vm));
}

export function failoverDir(dataDir: string, vm: string, resourceGroup: string): string {
  return path.join(vmFailoverDir(dataDir, vm), checkId('resource group', resourceGroup));
}

export function testFailoverRoot(dataDir: string): string {
  return path.join(dataDir, TEST_FAILOVER_DIR);
}

export function testFailoverDir(dataDir: string, vm: string): string {
  return path.join(testFailoverRoot(dataDir), checkId('VM name', vm));
}

export function materializedDiskFile(dir: string, diskId: string): string {
  return path.join(dir, `${checkId('disk id', diskId)}${IMAGE_SUFFIX}`);
}

export function manifestFile(dir: string): string {
  return path.join(dir, MANIFEST_FILE);
}

/**
 * The id a directory named by one holds (a VM under `replicas/`, `vms/`, `failover/` or `test-failover/`, a
 * group under `groups/`, a resource group under `failover/<vm>/`), or `undefined` for anything else found there.
 */
export function parseIdDirName(name: string): string | undefined {
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
  return isWriteTempName(name);
}
