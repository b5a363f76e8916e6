import fsp from 'node:fs/promises';
import { fsyncDir, systemErrorCode } from '@site-recovery/shared';
import {
  diskImageFile,
  disksDir,
  pointsDir,
  replicaDir,
  replicasDir,
  retiredReplicaDir,
  retiredRoot,
  retiredVmDir,
  stagingDir,
  stagingRoot,
  stateFile,
} from '../names.js';
import { ReplicaImage } from './replica-image.js';
import { writeReplicaState, type ReplicaStateFile } from './replica-state-file.js';

// A new disk layout for a replica that holds recovery points, crash-safely: the old replica moves
// aside as a retired one (one rename) and a complete new one takes its place (a second rename).
//
//   plan   the new replica is made in staging/<vm>/: disks, points dir, and its state file last, all
//          durable. Nothing of the current replica has changed; a crash leaves the old state (open
//          deletes an incomplete staging dir, or one beside a current replica).
//   apply  rename replicas/<vm> → retired/<vm>/<n>: from here on the old replica is retired, with
//          its points. Then rename staging/<vm> → replicas/<vm>. A crash between the two leaves no
//          current replica and a complete staged one: open finishes the move (the new state).

/** Where a switch stands; the test hook `onSwitchStep` is called (and awaited) as each is reached. */
export type SwitchStep = 'staged' | 'retired' | 'swapped';

/**
 * Makes a complete replica of `state` in `staging/<vm>/`: sparse zeroed disks, an empty points dir,
 * and the state file last, each durable before the next. Whatever was staged before is discarded.
 */
export async function stageReplica(dataDir: string, state: ReplicaStateFile): Promise<void> {
  const dir = stagingDir(dataDir, state.vm);
  await fsp.rm(dir, { recursive: true, force: true });
  try {
    await fsp.mkdir(disksDir(dir), { recursive: true });
    await fsp.mkdir(pointsDir(dir));
    for (const d of state.disks) {
      const image = ReplicaImage.create(diskImageFile(dir, d.id), d.size, 0);
      try {
        await image.wipe(); // durable at its size
      } finally {
        await image.close();
      }
    }
    await fsyncDir(disksDir(dir));
    await fsyncDir(dir);
    await fsyncDir(stagingRoot(dataDir));
    await fsyncDir(dataDir);
    await writeReplicaState(stateFile(dir), { ...state, wipePending: false });
  } catch (err) {
    await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
}

/** Moves the current replica of `vm` aside as retired replica `seq` (the switch's point of no return). */
export async function retireCurrent(dataDir: string, vm: string, seq: number): Promise<void> {
  await fsp.mkdir(retiredVmDir(dataDir, vm), { recursive: true });
  await fsyncDir(retiredRoot(dataDir));
  await fsyncDir(dataDir);
  await fsp.rename(replicaDir(dataDir, vm), retiredReplicaDir(dataDir, vm, seq));
  await fsyncDir(retiredVmDir(dataDir, vm));
  await fsyncDir(replicasDir(dataDir));
}

/**
 * Settles what a switch left in `staging/<vm>/`: with no current replica, a staged one with its state
 * file is complete and moves in (the switch is finished); anything else staged is discarded.
 */
export async function finishSwitch(dataDir: string, vm: string): Promise<void> {
  const staged = stagingDir(dataDir, vm);
  if (!(await exists(staged))) return;
  const current = replicaDir(dataDir, vm);
  if (!(await exists(stateFile(current))) && (await exists(stateFile(staged)))) {
    // Not a replica (no state file): at most the empty directory of a creation cut short.
    await fsp.rm(current, { recursive: true, force: true });
    await fsp.mkdir(replicasDir(dataDir), { recursive: true });
    await fsp.rename(staged, current);
    await fsyncDir(replicasDir(dataDir));
    await fsyncDir(stagingRoot(dataDir));
    return;
  }
  await fsp.rm(staged, { recursive: true, force: true });
}

/** VMs with a complete staged replica and no current one: `open` finishes their switch. */
export async function stagedOnly(dataDir: string, parse: (name: string) => string | undefined): Promise<string[]> {
  let names: string[];
  try {
    names = await fsp.readdir(stagingRoot(dataDir));
  } catch (err) {
    if (systemErrorCode(err) === 'ENOENT') return [];
    throw err;
  }
  const out: string[] = [];
  for (const name of names) {
    const vm = parse(name);
    if (vm === undefined) continue;
    if ((await exists(stateFile(stagingDir(dataDir, vm)))) && !(await exists(stateFile(replicaDir(dataDir, vm)))))
      out.push(vm);
  }
  return out;
}

export async function exists(file: string): Promise<boolean> {
  try {
    await fsp.access(file);
    return true;
  } catch {
    return false;
  }
}
