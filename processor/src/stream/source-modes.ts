import fsp from 'node:fs/promises';
import { z } from 'zod';
import {
  ErrorCode,
  SourceModeSchema,
  SrError,
  readJsonIfExists,
  systemErrorCode,
  writeFileAtomic,
  type SourceMode,
} from '@site-recovery/shared';
import { parseIdDirName, vmSourceFile, vmStateDir, vmsDir } from '../names.js';

const FileSchema = z.object({ mode: SourceModeSchema });

/**
 * How each VM's agent sees its writes, as the cache-store's VM list last said (the agent's hello). Kept
 * per VM in the data dir: after a restart with the source region gone, a watch-mode VM must still get
 * no point but at a clean scan, although no cache-store says so any more.
 */
export class SourceModes {
  private readonly byVm = new Map<string, SourceMode>();

  private constructor(private readonly dataDir: string | undefined) {}

  static async load(dataDir: string | undefined): Promise<SourceModes> {
    const m = new SourceModes(dataDir);
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
      const file = vmSourceFile(dataDir, vm);
      let raw: unknown;
      try {
        raw = await readJsonIfExists(file);
      } catch (err) {
        throw new SrError(ErrorCode.STATE_MISMATCH, `source mode ${file} is unreadable: ${(err as Error).message}`);
      }
      if (raw === undefined) continue;
      const parsed = FileSchema.safeParse(raw);
      if (!parsed.success)
        throw new SrError(ErrorCode.STATE_MISMATCH, `source mode ${file} is invalid; fix or remove it`);
      m.byVm.set(vm, parsed.data.mode);
    }
    return m;
  }

  /** `nbd` unless the VM's agent was last listed in another mode. */
  of(vm: string): SourceMode {
    return this.byVm.get(vm) ?? 'nbd';
  }

  /** Records `vm`'s mode; true when that changed anything. */
  async set(vm: string, mode: SourceMode): Promise<boolean> {
    if (this.of(vm) === mode) return false;
    if (this.dataDir !== undefined) {
      await fsp.mkdir(vmStateDir(this.dataDir, vm), { recursive: true });
      await writeFileAtomic(vmSourceFile(this.dataDir, vm), JSON.stringify({ mode }) + '\n');
    }
    this.byVm.set(vm, mode);
    return true;
  }
}
