import type { RegisterCommand } from './context.js';

export const registerTestFailover: RegisterCommand = (program, ctx) => {
  program
    .command('test-failover')
    .description('materialise a recovery point as a test VM on an isolated network while replication goes on')
    .argument('<vm>')
    .requiredOption('--point <point>', 'latest, latest-processed, latest-app-consistent, a point id, or an ISO time')
    .requiredOption('--network <name>', 'the isolated target network of the test VM')
    .option('--json', 'print the manifest as JSON')
    .action(async (vm: string, o: { point: string; network: string; json?: boolean }) => {
      ctx.printManifest(await ctx.client().testFailover(vm, { point: o.point, network: o.network }), o.json);
    });
};
