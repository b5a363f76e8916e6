import { ErrorCode } from '@site-recovery/shared';
import { ControlApiError } from '../../api/control-client.js';
import { formatGroupFailover } from '../sr-format.js';
import type { RegisterCommand } from './context.js';
import { checkGroupPoint, targetOf } from './group-target.js';
import { durationOption } from './option-parsers.js';

export const registerFailover: RegisterCommand = (program, ctx) => {
  program
    .command('failover')
    .description(
      'fail a VM, or every VM of a replication group (--group), over to a recovery point: materialise its disks ' +
        'in the target region and stop applying its stream',
    )
    .argument('[vm]')
    .option('--group <name>', 'fail over every member of this replication group to the same group point')
    .requiredOption(
      '--point <point>',
      'latest, latest-processed, latest-app-consistent, latest-multi-vm, a point id, a group point id, or an ISO ' +
        'time (the newest point at or before it); with --group: latest-multi-vm or a group point id',
    )
    .addOption(durationOption('--deadline', 'with --point latest: how long to wait for the cache-store to be drained'))
    .option('--json', 'print the manifest as JSON ({"vms": [manifest, ...]} with --group)')
    .action(async (vm: string | undefined, o: { group?: string; point: string; deadline?: number; json?: boolean }) => {
      const target = targetOf('failover', vm, o.group);
      if ('group' in target) {
        checkGroupPoint(o.point);
        if (o.deadline !== undefined)
          throw new ControlApiError(
            2,
            ErrorCode.BAD_OPTION,
            '--deadline goes with --point latest of one VM, not --group',
          );
        const r = await ctx.client().groupFailover(target.group, { point: o.point });
        if (o.json === true) ctx.printJson(r);
        else ctx.print(formatGroupFailover(target.group, r.vms));
        return;
      }
      const m = await ctx.client().failover(target.vm, {
        point: o.point,
        ...(o.deadline !== undefined ? { deadlineMs: o.deadline } : {}),
      });
      ctx.printManifest(m, o.json);
    });
};
