import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeImage, startCacheStore, tempDir, waitUntil, type ServiceProcess } from '@site-recovery/test';
import type { Agent } from '../../src/agent.js';
import { HealthCode } from '../../src/health.js';
import { faultFilter, ioError } from '../backend/fault-filter.js';
import { DISK_SIZE, startInProcess } from '../in-process-agent.js';

// A failed initial copy used to be logged once while the status said "copying" for ever: the VM
// looked protected while no full copy would ever reach the replica.
describe('an initial copy whose disk reads fail', () => {
  let t: { dir: string; cleanup: () => Promise<void> };
  let cs: ServiceProcess;
  let agent: Agent | undefined;
  beforeAll(async () => {
    t = await tempDir('copyretry');
    cs = await startCacheStore(path.join(t.dir, 'cs'));
  });
  afterAll(async () => {
    await agent?.close();
    await cs?.stop();
    await t?.cleanup();
  });

  it('shows the failure, retries with backoff, and completes once the reads succeed', async () => {
    await makeImage(path.join(t.dir, 'copyretry.img'), DISK_SIZE, [
      { offset: 0, length: 1 << 20 },
      { offset: 9 << 20, length: 3 << 20 },
    ]);
    let readsFail = true;
    ({ agent } = await startInProcess(t.dir, 'copyretry', {
      // No processor answers the sums request: after 200 ms of silence every block is copied.
      replication: {
        url: `ws://${cs.listen}`,
        initialCopyRetry: { initialDelayMs: 50, maxDelayMs: 200 },
        sums: { waitMs: 200 },
      },
      imageFilter: faultFilter((op) => (op === 'read' && readsFail ? ioError('EIO') : undefined)),
    }));
    const a = agent;

    const failing = await waitUntil(
      'the initial copy to fail twice in a row and wait for its next attempt',
      () => {
        const c = a.status().replication!.initialCopy;
        return c.state === 'failed' && (c.failure?.attempts ?? 0) >= 2 ? c : undefined;
      },
      20_000,
      5,
    );
    expect(failing.failure).toMatchObject({ code: 'EIO', message: 'EIO: injected fault' });
    expect(Date.parse(failing.failure!.nextRetryAt!)).toBeGreaterThan(Date.parse(failing.failure!.at));
    expect(failing.copiedBytes).toBe(0);
    const health = a.health();
    expect(health.ok).toBe(false);
    expect(health.problems.map((p) => p.code)).toEqual([HealthCode.INITIAL_COPY_FAILING]);
    expect(health.problems[0]!.message).toMatch(/EIO: injected fault.*next attempt at/);

    readsFail = false;
    const done = await waitUntil(
      'the initial copy to complete and the cache-store to acknowledge all of it',
      () => {
        const s = a.status();
        return s.replication!.initialCopy.state === 'done' && s.replication!.stream.ackedLsn === s.lsn ? s : undefined;
      },
      30_000,
    );
    expect(done.replication!.initialCopy).toEqual({
      state: 'done',
      copiedBytes: DISK_SIZE,
      totalBytes: DISK_SIZE,
      percent: 100,
      method: 'full',
      fullCopyReason: 'no answer to the sums request within 200 ms of silence',
      sentBytes: 4 << 20,
      zeroedBytes: 12 << 20,
    });
    // Four non-zero chunks of 1 MiB as writes, the twelve zero ones as ZERO records (the replica is not
    // known to be zeroes), and the completion marker went into the stream.
    expect(done.lsn).toBe(17);
    expect(a.health()).toMatchObject({ ok: true, problems: [] });
  });
});
