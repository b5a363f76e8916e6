import type { RegisterCommand } from './context.js';
import { durationOption } from './option-parsers.js';

export const registerFailover: RegisterCommand = (program, ctx) => {
  program
    .command('failover')
    .description(
      'fail a VM over to a recovery point: materialise its disks in the target region and stop applying its stream',
    )
    .argument('<vm>')
    .requiredOption(
      '--point <point>',
      'latest, latest-processed, latest-app-consistent, a point id, or an ISO time (the newest point at or before it)',
    )
    .addOption(durationOption('--deadline', 'with --point latest: how long to wait for the cache-store to be drained'))
    .option('--json', 'print the manifest as JSON')
    .action(async (vm: string, o: { point: string; deadline?: number; json?: boolean }) => {
      const m = await ctx.client().failover(vm, {
        point: o.point,
        ...(o.deadline !== undefined ? { deadlineMs: o.deadline } : {}),
      });
      ctx.printManifest(m, o.json);
    });
};
