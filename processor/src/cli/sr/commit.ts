import type { RegisterCommand } from './context.js';

export const registerCommit: RegisterCommand = (program, ctx) => {
  program
    .command('commit')
    .description('finish a failover: the recovery point chosen is final and older points are dropped')
    .argument('<vm>')
    .option('--json', "print the processor's answer as JSON")
    .action(async (vm: string, o: { json?: boolean }) => {
      const r = await ctx.client().commit(vm);
      if (o.json === true) ctx.printJson(r);
      else ctx.print(`committed the failover of ${vm}\n`);
    });
};
