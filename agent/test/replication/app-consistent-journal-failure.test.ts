import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '@site-recovery/shared';
import { tempDir, waitUntil } from '@site-recovery/test';
import { LsnSequence } from '../../src/backend/capture-filter.js';
import { FileJournal } from '../../src/journal/file-journal.js';
import type { Journal } from '../../src/journal/journal.js';
import { AppConsistentSnapshots } from '../../src/replication/app-consistent.js';

// The timer starts each point without awaiting it: a marker the journal refuses used to become an
// unhandled rejection, which ends the process on Node 20 (the VM's disks with it).
describe('an app-consistent point whose marker the journal refuses', () => {
  let t: { dir: string; cleanup: () => Promise<void> };
  let journal: FileJournal;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): number => unhandled.push(reason);
  beforeEach(async () => {
    t = await tempDir('appfail');
    journal = await FileJournal.open(path.join(t.dir, 'journal'));
    process.on('unhandledRejection', onUnhandled);
  });
  afterEach(async () => {
    process.off('unhandledRejection', onUnhandled);
    await journal.close();
    await t.cleanup();
  });

  it('is logged and reported in the status, and rejects nothing', async () => {
    // The journal holds LSN 0 and the sequence hands out 41 next: the journal refuses the gap, as it
    // refuses every append once it has failed.
    let appends = 0;
    const counting: Journal = Object.assign(Object.create(journal) as Journal, {
      append: (r: Parameters<Journal['append']>[0]) => (appends++, journal.append(r)),
    });
    const snapshots = new AppConsistentSnapshots({
      frequencyMs: 20,
      lsns: new LsnSequence(40),
      journal: counting,
      log: createLogger('appfail', 'silent'),
    });
    snapshots.start();
    await waitUntil('three markers refused by the journal', () => (appends >= 3 ? true : undefined), 10_000, 10);
    await snapshots.stop();
    // Node reports a rejection nobody handled once the microtasks of its turn have run.
    await new Promise((resolve) => setImmediate(resolve));

    expect(unhandled).toEqual([]);
    const status = snapshots.status();
    expect(status.taken).toBe(0);
    expect(status.failed).toBeGreaterThanOrEqual(3);
    expect(status.lastFailure).toMatchObject({ code: 'SR_JOURNAL_CORRUPT' });
    expect(status.lastFailure?.error).toMatch(/marker could not be journaled: .*would leave a gap/);
    expect(journal.lastLsn).toBe(0);
  });
});
