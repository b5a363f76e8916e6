import { formatGroupPoints } from '../sr-format.js';
import type { RegisterCommand } from './context.js';

export const registerGroupPoints: RegisterCommand = (program, ctx) => {
  program
    .command('group-points')
    .description("list a replication group's points that every member holds, oldest first")
    .argument('<group>')
    .option('--json', 'print them as JSON: [{id, time, members: [{vm, point, lsn}]}]')
    .action(async (group: string, o: { json?: boolean }) => {
      const points = await ctx.client().groupPoints(group);
      if (o.json === true) ctx.printJson(points);
      else ctx.print(formatGroupPoints(points));
    });
};
