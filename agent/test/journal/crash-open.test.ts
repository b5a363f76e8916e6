import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RECORD_MAGIC } from '@site-recovery/shared';
import { JOURNAL_CLI, makeImage, requireTools, run, runOk, startAgent, tempDir } from '@site-recovery/test';
import { checkpointFile, journalDir, parseSegmentFileName } from '../../src/names.js';

const MiB = 1 << 20;
const ARGS = ['--journal-segment-bytes', String(MiB)];

let t: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  requireTools(['qemu-io']);
  t = await tempDir('crash-open');
});
afterAll(() => t.cleanup());

// After a host crash the journal's unsynced end can be damaged in more than the newest segment (every
// roll since the last FLUSH left one unsynced). The agent cuts there when its checkpoint says the
// journal was never synced that far; when it was, the journal cannot be trusted and starts over.
describe('sr-agent opening a journal a crash damaged', () => {
  it('cuts damage past its checkpoint, says so, and serves on with the journal started over; starts the journal over for the same damage below it', async () => {
    const image = path.join(t.dir, 'os.img');
    const dataDir = path.join(t.dir, 'agent');
    await makeImage(image, 64 * MiB);
    const first = await startAgent({ vm: 'crash', disks: [{ id: 'os', path: image }], dataDir, args: ARGS });
    const writes = Array.from({ length: 12 }, (_, i) => ['-c', `write -P ${i + 1} ${i}M 512k`]).flat();
    await runOk('qemu-io', ['-f', 'raw', first.uri('os'), ...writes]);
    expect(await first.stop()).toBe(0);

    // Damage the first record of the third segment, as a crash tearing an unsynced write would.
    const names = (await fsp.readdir(journalDir(dataDir))).filter((n) => parseSegmentFileName(n) !== undefined).sort();
    expect(names.length).toBeGreaterThan(3);
    const third = path.join(journalDir(dataDir), names[2]!);
    const magic = Buffer.alloc(4);
    magic.writeUInt32BE(RECORD_MAGIC);
    const recordAt = (await fsp.readFile(third)).indexOf(magic); // the data is bytes 1..12, so this is the record
    expect(recordAt).toBeGreaterThan(0);
    const fh = await fsp.open(third, 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, recordAt + 1000);
    await fh.write(Buffer.from([b[0]! ^ 0xff]), 0, 1, recordAt + 1000);
    await fh.close();
    const cutAt = parseSegmentFileName(names[2]!)!;

    // Its checkpoint says the journal was synced through the damage: the journal cannot be trusted, so
    // it is let go unreplayed and starts over (the agent never replicated: no generation to begin).
    const damaged = path.join(t.dir, 'damaged-journal');
    await fsp.cp(journalDir(dataDir), damaged, { recursive: true });
    const over = await startAgent({ vm: 'crash', disks: [{ id: 'os', path: image }], dataDir, args: ARGS });
    expect(over.ready['lsn']).toBe(0);
    expect(over.stderr()).toContain(names[2]!);
    expect(over.stderr()).toContain('the journal is damaged where it was synced');
    expect(over.stderr()).toContain('the journal starts over');
    expect(await over.stop()).toBe(0);
    await fsp.rm(journalDir(dataDir), { recursive: true });
    await fsp.cp(damaged, journalDir(dataDir), { recursive: true });

    // The crash came before the checkpoint got that far: the damage is the unsynced tail, cut off. The rest
    // is not replayed (its older records could undo writes the image holds past the cut), so the journal no
    // longer describes the image and starts over.
    await fsp.writeFile(checkpointFile(dataDir), JSON.stringify({ lsn: 2 }) + '\n');
    const again = await startAgent({ vm: 'crash', disks: [{ id: 'os', path: image }], dataDir, args: ARGS });
    expect(again.ready['lsn']).toBe(0);
    expect(again.stderr()).toContain(`cut ${names[2]} at byte ${recordAt}, LSN ${cutAt} onward`);
    expect(again.stderr()).toContain('the journal starts over');
    await runOk('qemu-io', ['-f', 'raw', again.uri('os'), '-c', 'write -P 0x77 40M 512k']);
    expect(await again.stop()).toBe(0);
    const left = await fsp.readdir(journalDir(dataDir));
    for (const gone of names.slice(1)) expect(left).not.toContain(gone);
    const verify = await run(process.execPath, [JOURNAL_CLI, 'verify', '--data-dir', dataDir]);
    expect(verify.code, verify.stderr).toBe(0);
    const summary = JSON.parse(verify.stdout) as { firstLsn: number; lastLsn: number; records: number };
    expect(summary).toMatchObject({ firstLsn: 1, lastLsn: 1, records: 1 }); // the new write, in the new journal
  });
});
