import { formatPoints } from '../sr-format.js';
import type { RegisterCommand } from './context.js';

export const registerPoints: RegisterCommand = (program, ctx) => {
  program
    .command('points')
    .description("list a VM's recovery points, oldest first")
    .argument('<vm>')
    .option('--json', 'print the points as JSON: [{id, time, lsn, kind, undoBytes}]')
    .action(async (vm: string, o: { json?: boolean }) => {
      const points = await ctx.client().points(vm);
      if (o.json === true) ctx.printJson(points);
      else ctx.print(formatPoints(points));
    });
};
