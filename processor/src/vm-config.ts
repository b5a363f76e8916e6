import fsp from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ErrorCode, SrError, readJsonIfExists, writeFileAtomic } from '@site-recovery/shared';
import type { TargetOverrides } from './failover/target-resources.js';
import { vmConfigFile } from './names.js';

/** One thinning tier: points older than `olderThanMs` (relative to the newest point) keep one per `keepOneEveryMs`. */
export interface ThinningTier {
  readonly olderThanMs: number;
  readonly keepOneEveryMs: number;
}

/** Where the VM sits in the source region (`sr configure --source-*`); unset fields are unknown. */
export interface SourceConfig {
  readonly network?: string;
  readonly subnet?: string;
  readonly ip?: string;
}

/** A VM's replication policy and placement, as `GET /vms/:vm/config` shows it. */
export interface VmConfig {
  /** Crash-consistent points are cut this often. */
  readonly crashConsistentFrequencyMs: number;
  /** How often the agent is expected to mark app-consistent points (the agent acts on it; kept here for the API). */
  readonly appConsistentFrequencyMs: number;
  /** Points older than this (relative to the newest point) are removed. */
  readonly retentionMs: number;
  readonly thinning: readonly ThinningTier[];
  readonly source: SourceConfig;
  /** Per-VM choices of where a failover puts it (`sr configure --target-*`). */
  readonly target: TargetOverrides;
}

export const MIN_FREQUENCY_MS = 1000;
export const MAX_RETENTION_MS = 15 * 24 * 3600_000;
const HOUR_MS = 3600_000;

export const DEFAULT_VM_CONFIG: VmConfig = {
  crashConsistentFrequencyMs: 5 * 60_000,
  appConsistentFrequencyMs: HOUR_MS,
  retentionMs: 24 * HOUR_MS,
  // Every point of the last two hours, then one an hour.
  thinning: [{ olderThanMs: 2 * HOUR_MS, keepOneEveryMs: HOUR_MS }],
  source: {},
  target: {},
};

const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$/, 'letters, digits, ".", "_", "-", "/"; up to 128');
const ip = z
  .string()
  .regex(/^(?:\d{1,3}\.){3}\d{1,3}$|^[0-9a-fA-F:]{2,39}$|^dhcp$/, 'an IPv4 or IPv6 address, or "dhcp"');
const frequency = z.number().int().min(MIN_FREQUENCY_MS, `at least ${MIN_FREQUENCY_MS} ms`);

const PatchSchema = z
  .object({
    crashConsistentFrequencyMs: frequency.optional(),
    appConsistentFrequencyMs: frequency.optional(),
    retentionMs: z
      .number()
      .int()
      .min(MIN_FREQUENCY_MS)
      .max(MAX_RETENTION_MS, `at most 15 days (${MAX_RETENTION_MS} ms)`)
      .optional(),
    thinning: z
      .array(
        z
          .object({ olderThanMs: z.number().int().min(0), keepOneEveryMs: z.number().int().min(MIN_FREQUENCY_MS) })
          .strict(),
      )
      .max(16)
      .optional(),
    source: z.object({ network: name.optional(), subnet: name.optional(), ip: ip.optional() }).strict().optional(),
    target: z
      .object({
        resourceGroup: z
          .string()
          .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/)
          .optional(),
        network: name.optional(),
        subnet: name.optional(),
        ip: ip.optional(),
        availabilitySet: name.optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export type VmConfigPatch = z.infer<typeof PatchSchema>;

/** Checks a `PUT /vms/:vm/config` body; anything wrong is SR_BAD_OPTION and changes nothing. */
export function parseConfigPatch(body: unknown): VmConfigPatch {
  const parsed = PatchSchema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `config ${issue?.path.join('.') || '(body)'}: ${issue?.message ?? 'invalid'}`,
    );
  }
  return parsed.data;
}

/** `base` with the patch applied; placements merge field by field. */
export function applyPatch(base: VmConfig, patch: VmConfigPatch): VmConfig {
  return {
    crashConsistentFrequencyMs: patch.crashConsistentFrequencyMs ?? base.crashConsistentFrequencyMs,
    appConsistentFrequencyMs: patch.appConsistentFrequencyMs ?? base.appConsistentFrequencyMs,
    retentionMs: patch.retentionMs ?? base.retentionMs,
    thinning: patch.thinning ?? base.thinning,
    source: { ...base.source, ...patch.source },
    target: { ...base.target, ...patch.target },
  };
}

/** The VM's persisted config over `defaults`; a file that no longer parses is refused. */
export async function readVmConfig(
  dataDir: string,
  vm: string,
  defaults: VmConfig = DEFAULT_VM_CONFIG,
): Promise<VmConfig> {
  const file = vmConfigFile(dataDir, vm);
  const raw = await readJsonIfExists(file);
  if (raw === undefined) return defaults;
  try {
    return applyPatch(defaults, parseConfigPatch(raw));
  } catch (err) {
    throw new SrError(ErrorCode.STATE_MISMATCH, `VM config ${file} is invalid: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

export async function writeVmConfig(dataDir: string, vm: string, c: VmConfig): Promise<void> {
  const file = vmConfigFile(dataDir, vm);
  await fsp.mkdir(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, JSON.stringify(c, null, 2) + '\n');
}

/** Every VM's config: read from the data dir on first use, the defaults for a VM nobody configured. */
export class VmConfigs {
  private readonly byVm = new Map<string, VmConfig>();

  constructor(
    private readonly dataDir: string | undefined,
    private readonly defaults: VmConfig = DEFAULT_VM_CONFIG,
  ) {}

  async get(vm: string): Promise<VmConfig> {
    let c = this.byVm.get(vm);
    if (c === undefined) {
      c = this.dataDir !== undefined ? await readVmConfig(this.dataDir, vm, this.defaults) : this.defaults;
      this.byVm.set(vm, c);
    }
    return c;
  }

  /** Validates the whole patch before anything is written: a bad field changes nothing. */
  async put(vm: string, body: unknown): Promise<VmConfig> {
    const next = applyPatch(await this.get(vm), parseConfigPatch(body));
    if (this.dataDir !== undefined) await writeVmConfig(this.dataDir, vm, next);
    this.byVm.set(vm, next);
    return next;
  }
}
