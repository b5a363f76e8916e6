#!/usr/bin/env node
import path from 'node:path';
import { Command } from 'commander';
import { ErrorCode, SrError, intOption, readJsonIfExists, recordKindName, runCli } from '@site-recovery/shared';
import type { AgentState } from '../agent-state.js';
import { applyRecord } from '../backend/apply-record.js';
import { parseDisk } from './options.js';
import { FileBackend } from '../backend/file-backend.js';
import { FileJournal } from '../journal/file-journal.js';
import { journalDir, stateFile } from '../names.js';

/**
 * Operator tools for an agent's journal. They open the journal the same way the agent does, so a
 * torn tail is truncated here too; run them only while the agent is stopped.
 */
const program = new Command('sr-journal').description(
  'Inspect, verify and replay an sr-agent journal (stop the agent first)',
);

async function loadState(dataDir: string): Promise<AgentState> {
  const s = (await readJsonIfExists(stateFile(dataDir))) as AgentState | undefined;
  if (s === undefined)
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `${dataDir} is not an agent data dir (no ${path.basename(stateFile(dataDir))})`,
    );
  return s;
}

program
  .command('verify')
  .description('check every record (checksums, LSN sequence) and print a summary as JSON')
  .requiredOption('--data-dir <dir>', "the agent's data dir")
  .action(async (o: { dataDir: string }) => {
    const state = await loadState(o.dataDir);
    const j = await FileJournal.open(journalDir(o.dataDir));
    const perDisk = state.disks.map((d) => ({ id: d.id, records: 0, bytes: 0 }));
    let records = 0;
    for await (const r of j.read(j.firstLsn)) {
      records++;
      const d = perDisk[r.disk];
      if (d === undefined)
        throw new SrError(
          ErrorCode.JOURNAL_CORRUPT,
          `record ${r.lsn} names disk ${r.disk}; the VM has ${perDisk.length}`,
        );
      d.records++;
      d.bytes += r.length;
    }
    process.stdout.write(JSON.stringify({ vm: state.vm, ...j.stats(), records, disks: perDisk }, null, 2) + '\n');
    await j.close();
  });

program
  .command('dump')
  .description('print one line per record: lsn kind disk offset length')
  .requiredOption('--data-dir <dir>', "the agent's data dir")
  .option('--from <lsn>', 'first LSN to print', intOption('--from', 1), 1)
  .action(async (o: { dataDir: string; from: number }) => {
    const state = await loadState(o.dataDir);
    const j = await FileJournal.open(journalDir(o.dataDir));
    for await (const r of j.read(o.from)) {
      process.stdout.write(
        `${r.lsn} ${recordKindName(r.kind)} ${state.disks[r.disk]?.id ?? r.disk} ${r.offset} ${r.length}\n`,
      );
    }
    await j.close();
  });

program
  .command('replay')
  .description(
    'apply the journal, in LSN order, to copies of the starting images, or of the images as of --from (one --disk per disk to rebuild)',
  )
  .requiredOption('--data-dir <dir>', "the agent's data dir")
  .requiredOption(
    '--disk <id=path>',
    'image to apply the records of disk ID to (repeatable)',
    (v: string, p: string[]) => [...p, v],
    [] as string[],
  )
  .option(
    '--from <lsn>',
    'the images given already hold every write before this LSN (default 1: copies of the starting images)',
    intOption('--from', 1),
    1,
  )
  .option('--to <lsn>', 'stop after this LSN (default: the last record)', intOption('--to', 0))
  .action(async (o: { dataDir: string; disk: string[]; from: number; to?: number }) => {
    const from = o.from;
    const state = await loadState(o.dataDir);
    const to = o.to ?? Infinity;
    const j = await FileJournal.open(journalDir(o.dataDir));
    if (j.firstLsn > from) {
      await j.close();
      throw new SrError(
        ErrorCode.BAD_OPTION,
        `the journal starts at LSN ${j.firstLsn}: the records before it were let go once the images held them, so replay needs copies of the images as of LSN ${j.firstLsn - 1} and --from ${j.firstLsn}`,
      );
    }
    const targets = new Map<number, FileBackend>();
    for (const spec of o.disk.map(parseDisk)) {
      const idx = state.disks.findIndex((d) => d.id === spec.id);
      if (idx < 0)
        throw new SrError(
          ErrorCode.BAD_OPTION,
          `disk "${spec.id}" is not one of ${state.disks.map((d) => d.id).join(', ')}`,
        );
      const b = FileBackend.open(spec.path);
      if (b.size !== state.disks[idx]!.size) {
        throw new SrError(
          ErrorCode.BAD_DISK,
          `${spec.path} is ${b.size} bytes; disk "${spec.id}" is ${state.disks[idx]!.size}`,
        );
      }
      targets.set(idx, b);
    }
    let applied = 0;
    let last = 0;
    for await (const r of j.read(from)) {
      if (r.lsn > to) break;
      const t = targets.get(r.disk);
      if (t !== undefined) {
        await applyRecord(t, r);
        applied++;
      }
      last = r.lsn;
    }
    for (const t of targets.values()) {
      await t.flush();
      await t.close();
    }
    await j.close();
    process.stdout.write(JSON.stringify({ applied, throughLsn: last }) + '\n');
  });

runCli('sr-journal', async () => {
  await program.parseAsync();
});
