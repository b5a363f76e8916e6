import { randomBytes } from 'node:crypto';
import { Option } from 'commander';
import { ErrorCode, ID_PATTERN, SrError, issueToken, readSecretFile, type TokenRole } from '@site-recovery/shared';
import type { RegisterCommand } from './context.js';
import { writeCredentialFile } from './credential-file.js';
import { durationOption } from './option-parsers.js';

/** How long a token is good for unless --expires says otherwise. */
export const DEFAULT_TOKEN_EXPIRY = '90d';
const DEFAULT_TOKEN_EXPIRY_MS = 90 * 24 * 3600 * 1000;

interface IssueOptions {
  secretFile: string;
  vm?: string;
  role?: TokenRole;
  expires?: number;
  id?: string;
  out?: string;
}

export const registerToken: RegisterCommand = (program, ctx) => {
  const token = program
    .command('token')
    .description('tokens of agents, the processor and operators (no processor needed)');
  token
    .command('issue')
    .description(
      "issue a token signed with a secret: an agent token (--vm) or a processor token with the cache-store's " +
        "secret; an operator token (for sr and the control API) with the processor's own secret",
    )
    .requiredOption('--secret-file <file>', 'the secret of the daemon that will check the token (0600)')
    .option('--vm <name>', 'an agent token that may stream this VM only')
    .addOption(
      new Option('--role <role>', 'processor or operator (agent with --vm)').choices([
        'agent',
        'processor',
        'operator',
      ]),
    )
    .addOption(durationOption('--expires', `how long it is good for (default ${DEFAULT_TOKEN_EXPIRY})`))
    .option('--id <id>', 'its id, for revocation files and audit logs (default a random tok-<hex>)')
    .option('--out <file>', 'write it to this new file, readable by its owner only (0600), instead of stdout')
    .addHelpText(
      'after',
      "\nA token is revoked by adding its id to the checking daemon's --revoked-tokens-file.\n" +
        'Example:\n  sr token issue --secret-file /etc/site-recovery/processor.secret --role operator --expires 30d --out ~/.sr-token',
    )
    .action((o: IssueOptions) => {
      const role = roleOf(o);
      const id = o.id ?? `tok-${randomBytes(8).toString('hex')}`;
      if (!ID_PATTERN.test(id))
        throw new SrError(ErrorCode.BAD_OPTION, `--id "${id}" must be 1-64 letters, digits, '.', '_' or '-'`);
      const expiresMs = o.expires ?? DEFAULT_TOKEN_EXPIRY_MS;
      if (expiresMs < 1000) throw new SrError(ErrorCode.BAD_OPTION, '--expires must be at least 1s');
      const issuedAt = Math.floor(Date.now() / 1000);
      const expiresAt = issuedAt + Math.ceil(expiresMs / 1000);
      const text = issueToken(readSecretFile(o.secretFile), {
        id,
        role,
        ...(o.vm !== undefined ? { vm: o.vm } : {}),
        issuedAt,
        expiresAt,
      });
      const what = `${role} token ${id}${o.vm !== undefined ? ` for VM ${o.vm}` : ''}, expires ${new Date(expiresAt * 1000).toISOString()}`;
      if (o.out === undefined) {
        ctx.print(text + '\n');
        process.stderr.write(`sr: issued ${what}\n`);
        return;
      }
      writeCredentialFile(o.out, text, 'token');
      ctx.print(`wrote ${what} to ${o.out} (mode 0600)\n`);
    });
};

function roleOf(o: IssueOptions): TokenRole {
  if (o.vm !== undefined) {
    if (o.role !== undefined && o.role !== 'agent')
      throw new SrError(ErrorCode.BAD_OPTION, `--vm issues an agent token; it does not go with --role ${o.role}`);
    if (!ID_PATTERN.test(o.vm))
      throw new SrError(
        ErrorCode.BAD_OPTION,
        `--vm "${o.vm}" is not a VM name (1-64 letters, digits, '.', '_' or '-')`,
      );
    return 'agent';
  }
  if (o.role === undefined)
    throw new SrError(ErrorCode.BAD_OPTION, 'say whose token it is: --vm NAME, --role processor or --role operator');
  if (o.role === 'agent') throw new SrError(ErrorCode.BAD_OPTION, 'an agent token names its VM: give --vm NAME');
  return o.role;
}
