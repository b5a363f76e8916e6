import { formatGroupFailover } from '../sr-format.js';
import type { RegisterCommand } from './context.js';
import { checkGroupPoint, targetOf } from './group-target.js';

export const registerTestFailover: RegisterCommand = (program, ctx) => {
  program
    .command('test-failover')
    .description(
      'materialise a recovery point as a test VM on an isolated network while replication goes on; ' +
        'with --group, every member of the group at the same group point',
    )
    .argument('[vm]')
    .option('--group <name>', 'test every member of this replication group at the same group point')
    .requiredOption(
      '--point <point>',
      'latest, latest-processed, latest-app-consistent, latest-multi-vm, a point id, a group point id, or an ISO ' +
        'time; with --group: latest-multi-vm or a group point id',
    )
    .requiredOption('--network <name>', 'the isolated target network of the test VM')
    .option('--json', 'print the manifest as JSON ({"vms": [manifest, ...]} with --group)')
    .action(async (vm: string | undefined, o: { group?: string; point: string; network: string; json?: boolean }) => {
      const target = targetOf('test-failover', vm, o.group);
      if ('group' in target) {
        checkGroupPoint(o.point);
        const r = await ctx.client().groupTestFailover(target.group, { point: o.point, network: o.network });
        if (o.json === true) ctx.printJson(r);
        else ctx.print(formatGroupFailover(target.group, r.vms));
        return;
      }
      ctx.printManifest(await ctx.client().testFailover(target.vm, { point: o.point, network: o.network }), o.json);
    });
};
