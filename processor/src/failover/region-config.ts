import fs from 'node:fs';
import chokidar from 'chokidar';
import { z } from 'zod';
import { ErrorCode, SrError, type Logger } from '@site-recovery/shared';
import type { RegionDefaults } from './target-resources.js';

/**
 * The target region as the operator describes it (`--region FILE`): the networks that exist there,
 * default resource group and availability set, and the network mapping of the region pair. Failover
 * placement (target-resources.ts) follows it; without it, every mapped network counts as new.
 */
const RegionFileSchema = z.object({
  resourceGroup: z.string().min(1).optional(),
  availabilitySet: z.string().min(1).optional(),
  networks: z
    .array(
      z.object({
        name: z.string().min(1),
        subnets: z.array(z.object({ name: z.string().min(1), cidr: z.string().min(1) })),
      }),
    )
    .default([]),
  networkMapping: z.record(z.string(), z.string()).optional(),
});

export interface RegionConfig {
  readonly region: RegionDefaults;
  readonly networkMapping?: Readonly<Record<string, string>>;
}

export function readRegionConfig(file: string): RegionConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new SrError(ErrorCode.BAD_OPTION, `--region ${file}: cannot read it as JSON: ${(err as Error).message}`);
  }
  const parsed = RegionFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `--region ${file}: ${issue?.path.join('.') ?? ''} ${issue?.message ?? ''}`.trim(),
    );
  }
  const { networkMapping, ...region } = parsed.data;
  return { region, ...(networkMapping !== undefined ? { networkMapping } : {}) };
}

/**
 * Follows the region file: each time it changes, `apply` receives the new config. A file that no
 * longer parses is refused with an error in the log and the previous config stays in force, so an
 * operator's half-finished edit never changes where a failover lands. Returns a function that stops.
 */
export function watchRegionConfig(
  file: string,
  apply: (config: RegionConfig) => void,
  log: Logger,
): () => Promise<void> {
  const watcher = chokidar.watch(file, {
    ignoreInitial: true,
    awaitWriteFinish: { stabilityThreshold: 200, pollInterval: 50 },
  });
  const reload = (): void => {
    try {
      apply(readRegionConfig(file));
      log.info({ file }, 'target region reloaded');
    } catch (err) {
      log.error({ file, err: (err as Error).message }, 'target region file refused; keeping the previous one');
    }
  };
  watcher.on('add', reload).on('change', reload);
  return () => watcher.close();
}
