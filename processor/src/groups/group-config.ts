import fsp from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ErrorCode, SrError, checkId, readJsonIfExists, systemErrorCode, writeFileAtomic } from '@site-recovery/shared';
import { groupConfigFile, groupsDir, parseIdDirName } from '../names.js';

/** A replication group's settings, as `GET /groups/:group/config` shows them. */
export interface GroupConfig {
  /** How often the group's coordinator cuts a multi-VM point (relayed to every member's agent). */
  readonly multiVmFrequencyMs: number;
}

/** At least one second: each round holds every member's write replies for a round trip. */
export const MIN_MULTI_VM_FREQUENCY_MS = 1000;

export const DEFAULT_GROUP_CONFIG: GroupConfig = { multiVmFrequencyMs: 5 * 60_000 };

const PatchSchema = z
  .object({
    multiVmFrequencyMs: z
      .number()
      .int('a whole number of milliseconds')
      .min(MIN_MULTI_VM_FREQUENCY_MS, `at least ${MIN_MULTI_VM_FREQUENCY_MS} ms`)
      .max(Number.MAX_SAFE_INTEGER)
      .optional(),
  })
  .strict();

export type GroupConfigPatch = z.infer<typeof PatchSchema>;

/** Checks a `PUT /groups/:group/config` body; anything wrong is SR_BAD_OPTION and changes nothing. */
export function parseGroupConfigPatch(body: unknown): GroupConfigPatch {
  const parsed = PatchSchema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `group config ${issue?.path.join('.') || '(body)'}: ${issue?.message ?? 'invalid'}`,
    );
  }
  return parsed.data;
}

/**
 * Every group's settings: one file per group in the data dir (crash-safe replace), read once at
 * start; the defaults for a group nobody configured. Without a data dir they live in memory only.
 */
export class GroupConfigs {
  private readonly byGroup = new Map<string, GroupConfig>();

  private constructor(
    private readonly dataDir: string | undefined,
    private readonly defaults: GroupConfig,
  ) {}

  static async open(dataDir: string | undefined, defaults: GroupConfig = DEFAULT_GROUP_CONFIG): Promise<GroupConfigs> {
    const c = new GroupConfigs(dataDir, defaults);
    if (dataDir === undefined) return c;
    let names: string[] = [];
    try {
      names = (await fsp.readdir(groupsDir(dataDir), { withFileTypes: true }))
        .filter((e) => e.isDirectory() && parseIdDirName(e.name) !== undefined)
        .map((e) => e.name);
    } catch (err) {
      if (systemErrorCode(err) !== 'ENOENT') throw err;
    }
    for (const group of names) {
      const file = groupConfigFile(dataDir, group);
      let raw: unknown;
      try {
        raw = await readJsonIfExists(file);
        if (raw === undefined) continue;
        const patch = parseGroupConfigPatch(raw);
        c.byGroup.set(group, { multiVmFrequencyMs: patch.multiVmFrequencyMs ?? defaults.multiVmFrequencyMs });
      } catch (err) {
        throw new SrError(ErrorCode.STATE_MISMATCH, `group config ${file} is invalid: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    return c;
  }

  get(group: string): GroupConfig {
    return this.byGroup.get(group) ?? this.defaults;
  }

  /** Validates the whole patch before anything is written: a bad field changes nothing. */
  async put(group: string, body: unknown): Promise<GroupConfig> {
    checkId('group name', group);
    const patch = parseGroupConfigPatch(body);
    const next: GroupConfig = { multiVmFrequencyMs: patch.multiVmFrequencyMs ?? this.get(group).multiVmFrequencyMs };
    if (this.dataDir !== undefined) {
      const file = groupConfigFile(this.dataDir, group);
      await fsp.mkdir(path.dirname(file), { recursive: true });
      await writeFileAtomic(file, JSON.stringify(next, null, 2) + '\n');
    }
    this.byGroup.set(group, next);
    return next;
  }

  /** Groups that have a config of their own. */
  configured(): string[] {
    return [...this.byGroup.keys()].sort();
  }
}
