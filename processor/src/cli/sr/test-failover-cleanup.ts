import type { RegisterCommand } from './context.js';

export const registerTestFailoverCleanup: RegisterCommand = (program, ctx) => {
  program
    .command('test-failover-cleanup')
    .description('remove everything a test failover of the VM created')
    .argument('<vm>')
    .option('--json', 'print {removed: [...]} as JSON')
    .action(async (vm: string, o: { json?: boolean }) => {
      const r = await ctx.client().testFailoverCleanup(vm);
      if (o.json === true) ctx.printJson(r);
      else
        ctx.print(
          `removed ${r.removed.length} item(s) of the test failover of ${vm}\n${r.removed.map((x) => `  ${x}\n`).join('')}`,
        );
    });
};
