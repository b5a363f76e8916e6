import { ErrorCode } from '@site-recovery/shared';
import { ControlApiError } from '../../api/control-client.js';
import { formatConfig } from '../sr-format.js';
import type { RegisterCommand } from './context.js';
import { durationOption } from './option-parsers.js';

export const registerConfigureGroup: RegisterCommand = (program, ctx) => {
  program
    .command('configure-group')
    .description(
      "change a replication group's multi-VM point frequency (relayed to every member's agent); with no option, " +
        'show its configuration',
    )
    .argument('<group>')
    .addOption(
      durationOption(
        '--multi-vm-frequency',
        'cut a multi-VM point of the whole group this often (at least 1s; default 5m)',
      ),
    )
    .option('--json', 'print the resulting configuration as JSON')
    .action(async (group: string, o: { multiVmFrequency?: number; json?: boolean }) => {
      if (o.multiVmFrequency !== undefined && o.multiVmFrequency < 1000)
        throw new ControlApiError(2, ErrorCode.BAD_OPTION, '--multi-vm-frequency must be at least 1s');
      const client = ctx.client();
      const config =
        o.multiVmFrequency === undefined
          ? await client.groupConfig(group)
          : await client.configureGroup(group, { multiVmFrequencyMs: o.multiVmFrequency });
      if (o.json === true) ctx.printJson(config);
      else ctx.print(formatConfig(config));
    });
};
