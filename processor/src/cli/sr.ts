#!/usr/bin/env node
import { Command, CommanderError, Option } from 'commander';
import { ErrorCode, isSrError } from '@site-recovery/shared';
import { ControlApiError } from '../api/control-client.js';
import { registerCommit } from './sr/commit.js';
import { registerConfigure } from './sr/configure.js';
import { registerConfigureGroup } from './sr/configure-group.js';
import { srContext, type RegisterCommand, type SrConnection } from './sr/context.js';
import { registerFailover } from './sr/failover.js';
import { registerGroupPoints } from './sr/group-points.js';
import { registerPoints } from './sr/points.js';
import { registerSecret } from './sr/secret.js';
import { registerStatus } from './sr/status.js';
import { registerTestFailoverCleanup } from './sr/test-failover-cleanup.js';
import { registerTestFailover } from './sr/test-failover.js';
import { registerToken } from './sr/token.js';

// The operator's CLI for the processor's control API; one file per subcommand under sr/. Exit codes:
// 0 done, 2 refused (by the processor with a stable code, or a bad option here), 1 the processor could
// not be reached or answered oddly.

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
  SR_GROUP_NOT_FOUND: 'check the group name against "sr status" (groups are named by the agents\' --group)',
  SR_GROUP_POINT_NOT_FOUND:
    'list the points every member holds with "sr group-points GROUP", or fail members over one by one',
  SR_DEADLINE:
    'the cache-store could not be caught up in time; retry with a longer --deadline or use --point latest-processed',
  SR_BAD_OPTION: 'see "sr --help" and "sr COMMAND --help"',
  SR_AUTH:
    'give an operator token of this processor with --token-file FILE or SR_TOKEN_FILE ' +
    '(sr token issue --secret-file PROCESSOR_SECRET --role operator --out FILE)',
  SR_BAD_HOST: "use the processor's own address in --processor, or add this name to its --allowed-hosts",
};

/** In the order `sr --help` lists them. */
const SUBCOMMANDS: readonly RegisterCommand[] = [
  registerPoints,
  registerGroupPoints,
  registerConfigure,
  registerConfigureGroup,
  registerFailover,
  registerTestFailover,
  registerTestFailoverCleanup,
  registerCommit,
  registerStatus,
  registerSecret,
  registerToken,
];

const program = new Command('sr')
  .description(
    'Control a site-recovery processor: recovery points, replication settings and groups, failover, test failover and commit.',
  )
  .addOption(
    new Option('--processor <url>', "the processor's control API, http(s)://HOST:PORT (its --listen address)")
      .env('SR_PROCESSOR_URL')
      .default('http://127.0.0.1:8470'),
  )
  .addOption(
    new Option(
      '--token-file <file>',
      "an operator token of the processor (0600; made with sr token issue --role operator and the processor's secret)",
    ).env('SR_TOKEN_FILE'),
  )
  .addOption(
    new Option('--tls-ca <file>', "the CA certificate that signed an https:// processor's certificate").env(
      'SR_TLS_CA',
    ),
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

const ctx = srContext(() => program.opts<SrConnection>());
for (const register of SUBCOMMANDS) register(program, ctx);

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
