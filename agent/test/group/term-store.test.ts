import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '@site-recovery/shared';
import { tempDir, waitUntil } from '@site-recovery/test';
import { TermStore } from '../../src/group/term-store.js';

// A coordinator that restarts must never take a term it, or anyone it heard of, used before: the
// terms it takes and the highest it heard of survive a restart of the agent.

let t: { dir: string; cleanup: () => Promise<void> };
const log = createLogger('terms', 'silent');
beforeAll(async () => {
  t = await tempDir('group-terms');
});
afterAll(() => t?.cleanup());

describe('group terms', () => {
  it('has a term on disk before it is used, and never hands out one it has seen again', async () => {
    const s = await TermStore.open(t.dir, log);
    expect(await s.next('a')).toBe(1);
    expect(s.view()).toEqual({ term: 1, by: 'a' });
    // Reopened at once, as after a kill -9 right after the first PREPARE went out.
    expect((await TermStore.open(t.dir, log)).highest).toBe(1);

    s.observe(7, 'b');
    s.observe(5, 'c'); // lower: changes nothing
    expect(s.view()).toEqual({ term: 7, by: 'b' });
    await waitUntil(
      'term 7 on disk',
      async () => ((await TermStore.open(t.dir, log)).highest === 7 ? true : undefined),
      5000,
      10,
    );

    const restarted = await TermStore.open(t.dir, log);
    expect(restarted.coordinator).toBeUndefined();
    expect(await restarted.next('a')).toBe(8);
  });
});
