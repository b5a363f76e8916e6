import type { RegisterCommand } from './context.js';
import { targetOf } from './group-target.js';

export const registerTestFailoverCleanup: RegisterCommand = (program, ctx) => {
  program
    .command('test-failover-cleanup')
    .description('remove everything a test failover of the VM (or of every member of --group) created')
    .argument('[vm]')
    .option('--group <name>', "clean up the test failovers of this replication group's members")
    .option('--json', 'print {removed: [...]} as JSON ({"vms": [{vm, removed}, ...]} with --group)')
    .action(async (vm: string | undefined, o: { group?: string; json?: boolean }) => {
      const target = targetOf('test-failover-cleanup', vm, o.group);
      const each =
        'group' in target
          ? (await ctx.client().groupTestFailoverCleanup(target.group)).vms
          : [{ vm: target.vm, ...(await ctx.client().testFailoverCleanup(target.vm)) }];
      if (o.json === true) return ctx.printJson('group' in target ? { vms: each } : { removed: each[0]!.removed });
      for (const r of each)
        ctx.print(
          `removed ${r.removed.length} item(s) of the test failover of ${r.vm}\n${r.removed.map((x) => `  ${x}\n`).join('')}`,
        );
    });
};
