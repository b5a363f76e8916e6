import { Option } from 'commander';
import { ErrorCode, parseDuration } from '@site-recovery/shared';
import { ControlApiError, type VmConfigUpdate } from '../../api/control-client.js';
import { formatConfig } from '../sr-format.js';
import type { RegisterCommand } from './context.js';
import { durationOption, ipOption } from './option-parsers.js';

interface ConfigureOptions {
  crashConsistentFrequency?: number;
  appConsistentFrequency?: number;
  retention?: number;
  thinning?: { olderThanMs: number; keepOneEveryMs: number }[];
  sourceNetwork?: string;
  sourceSubnet?: string;
  sourceIp?: string;
  targetResourceGroup?: string;
  targetNetwork?: string;
  targetSubnet?: string;
  targetIp?: string;
  availabilitySet?: string;
  json?: boolean;
}

/** `2h:1h,1d:6h` → tiers; `none` → no thinning. */
function parseThinning(value: string): { olderThanMs: number; keepOneEveryMs: number }[] {
  if (value === 'none') return [];
  return value.split(',').map((tier) => {
    const [age, every, extra] = tier.split(':');
    if (age === undefined || every === undefined || extra !== undefined) {
      throw new ControlApiError(2, ErrorCode.BAD_OPTION, `--thinning "${value}": each tier is AGE:EVERY, e.g. 2h:1h`);
    }
    return {
      olderThanMs: parseDuration(age, '--thinning age'),
      keepOneEveryMs: parseDuration(every, '--thinning interval'),
    };
  });
}

/** The PUT body: only what was given; the source placement is all three fields or none. */
function configUpdate(o: ConfigureOptions): VmConfigUpdate {
  const update: VmConfigUpdate = {};
  if (o.crashConsistentFrequency !== undefined) update.crashConsistentFrequencyMs = o.crashConsistentFrequency;
  if (o.appConsistentFrequency !== undefined) update.appConsistentFrequencyMs = o.appConsistentFrequency;
  if (o.retention !== undefined) update.retentionMs = o.retention;
  if (o.thinning !== undefined) update.thinning = o.thinning;
  const source = [o.sourceNetwork, o.sourceSubnet, o.sourceIp];
  if (source.some((s) => s !== undefined)) {
    if (o.sourceNetwork === undefined || o.sourceSubnet === undefined || o.sourceIp === undefined) {
      throw new ControlApiError(
        2,
        ErrorCode.BAD_OPTION,
        '--source-network, --source-subnet and --source-ip go together; give all three',
      );
    }
    update.source = { network: o.sourceNetwork, subnet: o.sourceSubnet, ip: o.sourceIp };
  }
  const target = {
    ...(o.targetResourceGroup !== undefined ? { resourceGroup: o.targetResourceGroup } : {}),
    ...(o.targetNetwork !== undefined ? { network: o.targetNetwork } : {}),
    ...(o.targetSubnet !== undefined ? { subnet: o.targetSubnet } : {}),
    ...(o.targetIp !== undefined ? { ip: o.targetIp } : {}),
    ...(o.availabilitySet !== undefined ? { availabilitySet: o.availabilitySet } : {}),
  };
  if (Object.keys(target).length > 0) update.target = target;
  return update;
}

export const registerConfigure: RegisterCommand = (program, ctx) => {
  program
    .command('configure')
    .description("change a VM's point schedule, retention and placement; with no option, show its configuration")
    .argument('<vm>')
    .addOption(durationOption('--crash-consistent-frequency', 'cut a crash-consistent point this often'))
    .addOption(durationOption('--app-consistent-frequency', 'cut an app-consistent point this often'))
    .addOption(durationOption('--retention', 'keep points this long'))
    .addOption(
      new Option(
        '--thinning <tiers>',
        'points older than AGE keep one every EVERY: AGE:EVERY[,AGE:EVERY...] (e.g. 2h:1h,1d:6h), or "none"',
      ).argParser(parseThinning),
    )
    .option('--source-network <name>', "the VM's network in the source region (with --source-subnet and --source-ip)")
    .option('--source-subnet <name>', "the VM's subnet in the source region")
    .addOption(ipOption('--source-ip', 'the VM\'s static IPv4 address in the source region, or "dhcp"'))
    .option(
      '--target-resource-group <name>',
      'resource group of the failed-over VM (default: the region default, else <vm>-asr)',
    )
    .option('--target-network <name>', 'target virtual network (default: network mapping, else <source network>-asr)')
    .option(
      '--target-subnet <name>',
      'target subnet (default: the one named like the source subnet, else the first alphabetically)',
    )
    .addOption(
      ipOption(
        '--target-ip',
        'static IPv4 address of the failed-over VM, or "dhcp" (default: the source address if free)',
      ),
    )
    .option('--availability-set <name>', 'availability set of the failed-over VM')
    .option('--json', 'print the resulting configuration as JSON')
    .action(async (vm: string, o: ConfigureOptions) => {
      const update = configUpdate(o);
      const client = ctx.client();
      const config = Object.keys(update).length === 0 ? await client.config(vm) : await client.configure(vm, update);
      if (o.json === true) ctx.printJson(config);
      else ctx.print(formatConfig(config));
    });
};
