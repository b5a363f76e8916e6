#!/usr/bin/env node
import { Command, CommanderError, Option } from 'commander';
import { ErrorCode, isSrError } from '@site-recovery/shared';
import { parseDuration } from '@site-recovery/shared';
import { ControlApiError, ControlClient, type Manifest, type VmConfigUpdate } from '../api/control-client.js';
import { formatConfig, formatManifest, formatPoints, formatStatus } from './sr-format.js';
import { DHCP, parseIpv4 } from '../failover/target-resources.js';

// The operator's CLI for the processor's control API. Exit codes: 0 done, 2 refused (by the processor
// with a stable code, or a bad option here), 1 the processor could not be reached or answered oddly.

/** What to do next, per refusal code; appended to the processor's own message. */
const HINTS: Readonly<Record<string, string>> = {
  SR_POINT_NOT_FOUND:
    'list the points with "sr points VM" and pass an id, an ISO time, latest, latest-processed or latest-app-consistent',
  SR_POINT_PRUNED: 'retention has removed that point; pick a newer one from "sr points VM" or raise --retention',
  SR_RESYNCING:
    'the replica is resynchronising; wait until "sr status VM" shows replicating, or fail over to an earlier point',
  SR_FAILOVER_IN_PROGRESS:
    'another failover or test failover of this VM is running or still present; wait, or run "sr test-failover-cleanup VM"',
  SR_FAILED_OVER: 'the VM is already failed over; run "sr commit VM" to finish, or test-failover only',
  SR_NOT_FAILED_OVER: 'run "sr failover VM --point P" first',
  SR_VM_NOT_FOUND: 'check the name against "sr status"',
  SR_NO_TEST_FAILOVER: 'there is nothing to clean up',
  SR_DEADLINE:
    'the cache-store could not be caught up in time; retry with a longer --deadline or use --point latest-processed',
  SR_BAD_OPTION: 'see "sr --help" and "sr COMMAND --help"',
};

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

const program = new Command('sr')
  .description(
    'Control a site-recovery processor: recovery points, replication settings, failover, test failover and commit.',
  )
  .addOption(
    new Option('--processor <url>', "the processor's control API, http(s)://HOST:PORT (its --listen address)")
      .env('SR_PROCESSOR_URL')
      .default('http://127.0.0.1:8470'),
  )
  .showHelpAfterError(false)
  .exitOverride()
  // Commander's own error lines become ours (one line, code first) in the catch below.
  .configureOutput({ outputError: () => undefined })
  .addHelpText(
    'after',
    '\nExit status: 0 done; 2 refused (the message names the code, e.g. SR_POINT_NOT_FOUND); 1 the processor could not\n' +
      'be reached. Durations are written like 30s, 15m, 24h, 15d or 1h30m.\n' +
      'Example:\n  sr --processor http://10.1.0.4:8470 failover web01 --point latest-processed --json',
  );

const client = (): ControlClient => new ControlClient(program.opts<{ processor: string }>().processor);
const print = (text: string): void => void process.stdout.write(text);
const printJson = (doc: unknown): void => print(JSON.stringify(doc, null, 2) + '\n');

const durationOption = (flag: string, description: string): Option =>
  new Option(`${flag} <duration>`, description).argParser((v: string) => parseDuration(v, flag));

const ipOption = (flag: string, description: string): Option =>
  new Option(`${flag} <ip>`, description).argParser((v: string) => (v === DHCP ? v : (parseIpv4(v, flag), v)));

program
  .command('points')
  .description("list a VM's recovery points, oldest first")
  .argument('<vm>')
  .option('--json', 'print the points as JSON: [{id, time, lsn, kind, undoBytes}]')
  .action(async (vm: string, o: { json?: boolean }) => {
    const points = await client().points(vm);
    if (o.json === true) printJson(points);
    else print(formatPoints(points));
  });

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
    const config = Object.keys(update).length === 0 ? await client().config(vm) : await client().configure(vm, update);
    if (o.json === true) printJson(config);
    else print(formatConfig(config));
  });

const printManifest = (m: Manifest, json: boolean | undefined): void =>
  json === true ? printJson(m) : print(formatManifest(m));

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
    const m = await client().failover(vm, {
      point: o.point,
      ...(o.deadline !== undefined ? { deadlineMs: o.deadline } : {}),
    });
    printManifest(m, o.json);
  });

program
  .command('test-failover')
  .description('materialise a recovery point as a test VM on an isolated network while replication goes on')
  .argument('<vm>')
  .requiredOption('--point <point>', 'latest, latest-processed, latest-app-consistent, a point id, or an ISO time')
  .requiredOption('--network <name>', 'the isolated target network of the test VM')
  .option('--json', 'print the manifest as JSON')
  .action(async (vm: string, o: { point: string; network: string; json?: boolean }) => {
    printManifest(await client().testFailover(vm, { point: o.point, network: o.network }), o.json);
  });

program
  .command('test-failover-cleanup')
  .description('remove everything a test failover of the VM created')
  .argument('<vm>')
  .option('--json', 'print {removed: [...]} as JSON')
  .action(async (vm: string, o: { json?: boolean }) => {
    const r = await client().testFailoverCleanup(vm);
    if (o.json === true) printJson(r);
    else
      print(
        `removed ${r.removed.length} item(s) of the test failover of ${vm}\n${r.removed.map((x) => `  ${x}\n`).join('')}`,
      );
  });

program
  .command('commit')
  .description('finish a failover: the recovery point chosen is final and older points are dropped')
  .argument('<vm>')
  .option('--json', "print the processor's answer as JSON")
  .action(async (vm: string, o: { json?: boolean }) => {
    const r = await client().commit(vm);
    if (o.json === true) printJson(r);
    else print(`committed the failover of ${vm}\n`);
  });

program
  .command('status')
  .description('replication state of every VM, or of one')
  .argument('[vm]')
  .option('--json', "print the status as JSON (the processor's GET /status, narrowed to the VM if one is named)")
  .action(async (vm: string | undefined, o: { json?: boolean }) => {
    const status = await client().status();
    const vms = vm === undefined ? status.vms : status.vms.filter((v) => v.vm === vm);
    if (vm !== undefined && vms.length === 0) {
      throw new ControlApiError(
        2,
        'SR_VM_NOT_FOUND',
        `the processor does not replicate a VM named ${vm} (it has: ${status.vms.map((v) => v.vm).join(', ') || 'none'})`,
      );
    }
    if (o.json === true) printJson(vm === undefined ? status : { ...status, vms });
    else print(formatStatus(status, vms));
  });

function fail(code: string, message: string, exitCode: number): never {
  const hint = HINTS[code];
  const text = `${message}${hint !== undefined && !message.includes(hint) ? `; ${hint}` : ''}`.replace(
    /\s*\n\s*/g,
    ' ',
  );
  process.stderr.write(`sr: ${code}: ${text}\n`);
  process.exit(exitCode);
}

program.parseAsync().catch((err: unknown) => {
  if (err instanceof CommanderError) {
    if (err.exitCode === 0) process.exit(0); // --help, --version
    if (err.code === 'commander.help') process.exit(2); // no command: the help on stderr is the message
    fail(ErrorCode.BAD_OPTION, err.message.replace(/^error: /, ''), 2);
  }
  if (err instanceof ControlApiError) fail(err.code, err.message, err.exitCode);
  if (isSrError(err)) fail(err.code, err.message, 2);
  fail(ErrorCode.INTERNAL, (err as Error).message, 1);
});
