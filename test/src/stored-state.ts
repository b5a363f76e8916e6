import path from 'node:path';
import { isWriteTempName } from '@site-recovery/shared';
import { digestTree } from './dir-tree.js';
import { runOk } from './process.js';
import type { ProtectedVm, ReplicationEnv } from './replication-env.js';
import { srJson, srOk, type SrPoint } from './sr-cli.js';
import { waitUntil } from './wait-until.js';

/**
 * What an attack must leave as it found it: every byte the cache-store and the processor store (the
 * stored streams, the replicas, their points, any failover), and what each says of the VM. The
 * processor's audit log is left out: recording the attempts is its job.
 */
export interface StoredState {
  readonly cacheStoreFiles: Record<string, string>;
  readonly processorFiles: Record<string, string>;
  readonly cacheStoreVm: unknown;
  readonly processorVm: unknown;
  readonly points: SrPoint[];
}

const notStored = (name: string): boolean => isWriteTempName(name) || name === 'audit.log';

export async function storedState(env: ReplicationEnv, vm: ProtectedVm): Promise<StoredState> {
  const p = await env.processorVm(vm.name);
  return {
    cacheStoreFiles: await digestTree(path.join(env.dir, 'cache-store'), notStored),
    processorFiles: await digestTree(path.join(env.dir, 'processor'), notStored),
    cacheStoreVm: await env.cacheStoreVm(vm.name),
    // Lag figures move with the clock alone; what was applied and where does not.
    processorVm: p && { ...p, lagMs: undefined },
    points: await srJson<SrPoint[]>(env.processor, ['points', vm.name]),
  };
}

/**
 * Brings `vm` to a state that holds still: some writes, a recovery point with them in it, no further
 * points scheduled (hourly), everything applied and confirmed. Resolves once two readings a second
 * apart are equal, and returns that state.
 */
export async function settledState(env: ReplicationEnv, vm: ProtectedVm): Promise<StoredState> {
  await srOk(env.processor, ['configure', vm.name, '--crash-consistent-frequency', '1s']);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', vm.agent.uri(vm.disks[0]!.id)]);
  const written = (await env.agentStatus(vm)).lsn;
  await waitUntil(
    `a recovery point of ${vm.name} holding LSN ${written}`,
    async () =>
      (await srJson<SrPoint[]>(env.processor, ['points', vm.name])).some((x) => x.lsn >= written) || undefined,
    30_000,
    250,
  );
  await srOk(env.processor, ['configure', vm.name, '--crash-consistent-frequency', '1h']);
  await env.drained(vm);
  let last: StoredState | undefined;
  return waitUntil(
    `the stored state of ${vm.name} to hold still for a second`,
    async () => {
      const now = await storedState(env, vm);
      const still = last !== undefined && JSON.stringify(now) === JSON.stringify(last);
      last = now;
      return still ? now : undefined;
    },
    60_000,
    1000,
  );
}
