import fsp from 'node:fs/promises';
import { z } from 'zod';
import {
  ErrorCode,
  ID_PATTERN,
  SrError,
  readJsonIfExists,
  systemErrorCode,
  writeFileAtomic,
} from '@site-recovery/shared';
import { parseIdDirName, vmGroupFile, vmStateDir, vmsDir } from '../names.js';

const FileSchema = z.object({ group: z.string().regex(ID_PATTERN).nullable() });

/**
 * Which replication group each VM is in. Learnt from the cache-store's VM list (the group its agent
 * named in its hello) and from the members a group's marks name; kept per VM in the data dir, so a
 * group can be failed over after a restart with the source region (and the cache-store) gone.
 */
export class GroupMembership {
  private readonly byVm = new Map<string, string>();

  private constructor(private readonly dataDir: string | undefined) {}

  static async load(dataDir: string | undefined): Promise<GroupMembership> {
    const m = new GroupMembership(dataDir);
    if (dataDir === undefined) return m;
    let names: string[];
    try {
      names = (await fsp.readdir(vmsDir(dataDir), { withFileTypes: true }))
        .filter((e) => e.isDirectory() && parseIdDirName(e.name) !== undefined)
        .map((e) => e.name);
    } catch (err) {
      if (systemErrorCode(err) === 'ENOENT') return m;
      throw err;
    }
    for (const vm of names) {
      const file = vmGroupFile(dataDir, vm);
      let raw: unknown;
      try {
        raw = await readJsonIfExists(file);
      } catch (err) {
        throw new SrError(
          ErrorCode.STATE_MISMATCH,
          `group membership ${file} is unreadable: ${(err as Error).message}`,
        );
      }
      if (raw === undefined) continue;
      const parsed = FileSchema.safeParse(raw);
      if (!parsed.success)
        throw new SrError(ErrorCode.STATE_MISMATCH, `group membership ${file} is invalid; fix or remove it`);
      if (parsed.data.group !== null) m.byVm.set(vm, parsed.data.group);
    }
    return m;
  }

  of(vm: string): string | undefined {
    return this.byVm.get(vm);
  }

  /** The group's members, in name order. */
  members(group: string): string[] {
    const out: string[] = [];
    for (const [vm, g] of this.byVm) if (g === group) out.push(vm);
    return out.sort();
  }

  groups(): string[] {
    return [...new Set(this.byVm.values())].sort();
  }

  /** Records `vm` in `group` (or in none); true when that changed anything. */
  async set(vm: string, group: string | undefined): Promise<boolean> {
    if (this.byVm.get(vm) === group) return false;
    if (this.dataDir !== undefined) {
      await fsp.mkdir(vmStateDir(this.dataDir, vm), { recursive: true });
      await writeFileAtomic(vmGroupFile(this.dataDir, vm), JSON.stringify({ group: group ?? null }) + '\n');
    }
    if (group === undefined) this.byVm.delete(vm);
    else this.byVm.set(vm, group);
    return true;
  }
}
