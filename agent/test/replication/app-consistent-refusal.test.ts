import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '@site-recovery/shared';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LsnSequence } from '../../src/backend/capture-filter.js';
import { FileJournal } from '../../src/journal/file-journal.js';
import { AppConsistentSnapshots, NOT_NOW } from '../../src/replication/app-consistent.js';

// In bitmap mode or its resync the processor cuts no point, so freezing the applications for one would
// hold them for nothing: neither command runs, and no marker is journaled.
describe('an app-consistent point while no point can be cut', () => {
  let dir: string;
  let journal: FileJournal;
  beforeEach(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'sr-app-refusal-'));
    journal = await FileJournal.open(path.join(dir, 'journal'));
  });
  afterEach(async () => {
    await journal.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('runs neither command, journals nothing, and says why', async () => {
    const ran = path.join(dir, 'ran');
    let refusal: string | undefined = 'the VM is in bitmap mode';
    const snaps = new AppConsistentSnapshots({
      frequencyMs: 0,
      preSnapshot: `echo pre >> ${ran}`,
      postSnapshot: `echo post >> ${ran}`,
      lsns: new LsnSequence(0),
      journal,
      log: createLogger('app-refusal', 'silent'),
      refusal: () => refusal,
    });
    await snaps.take();
    expect(await fsp.readFile(ran, 'utf8').catch(() => 'not run')).toBe('not run');
    expect(journal.lastLsn).toBe(0);
    expect(snaps.status()).toMatchObject({
      taken: 0,
      failed: 1,
      lastFailure: { code: NOT_NOW, error: 'the VM is in bitmap mode' },
    });
    refusal = undefined;
    await snaps.take();
    expect(await fsp.readFile(ran, 'utf8')).toBe('pre\npost\n');
    expect(snaps.status()).toMatchObject({ taken: 1, last: { seq: 2, lsn: 1 } });
  });
});
