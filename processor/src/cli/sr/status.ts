import { ControlApiError } from '../../api/control-client.js';
import { formatStatus } from '../sr-format.js';
import type { RegisterCommand } from './context.js';

export const registerStatus: RegisterCommand = (program, ctx) => {
  program
    .command('status')
    .description('replication state of every VM and replication group, or of one VM (and its group)')
    .argument('[vm]')
    .option('--json', "print the status as JSON (the processor's GET /status, narrowed to the VM if one is named)")
    .action(async (vm: string | undefined, o: { json?: boolean }) => {
      const status = await ctx.client().status();
      const vms = vm === undefined ? status.vms : status.vms.filter((v) => v.vm === vm);
      if (vm !== undefined && vms.length === 0) {
        throw new ControlApiError(
          2,
          'SR_VM_NOT_FOUND',
          `the processor does not replicate a VM named ${vm} (it has: ${status.vms.map((v) => v.vm).join(', ') || 'none'})`,
        );
      }
      // Narrowed to a VM, only its group is shown.
      const narrowed =
        vm === undefined
          ? status
          : { ...status, vms, groups: (status.groups ?? []).filter((g) => g.name === vms[0]!.group) };
      if (o.json === true) ctx.printJson(narrowed);
      else ctx.print(formatStatus(narrowed, vms));
    });
};
