import { newSecretText } from '@site-recovery/shared';
import type { RegisterCommand } from './context.js';
import { writeCredentialFile } from './credential-file.js';

export const registerSecret: RegisterCommand = (program, ctx) => {
  const secret = program
    .command('secret')
    .description('signing secrets of the daemons that check tokens (no processor needed)');
  secret
    .command('new')
    .description(
      'make a new random secret for --auth-secret-file of sr-cache-store or sr-processor (each its own); ' +
        'tokens are then issued with it by "sr token issue --secret-file FILE"',
    )
    .option('--out <file>', 'write it to this new file, readable by its owner only (0600), instead of stdout')
    .action((o: { out?: string }) => {
      const text = newSecretText();
      if (o.out === undefined) return ctx.print(text + '\n');
      writeCredentialFile(o.out, text, 'secret');
      ctx.print(`wrote a new secret to ${o.out} (mode 0600)\n`);
    });
};
