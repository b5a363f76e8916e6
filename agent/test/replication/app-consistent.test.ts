import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  JOURNAL_CLI,
  getJson,
  makeImage,
  runOk,
  Credentials,
  startAgent,
  startCacheStore,
  tempDir,
  waitUntil,
  type ServiceProcess,
} from '@site-recovery/test';

interface Status {
  lsn: number;
  replication: {
    appConsistent: {
      taken: number;
      failed: number;
      last?: { seq: number; lsn: number };
      lastFailure?: { error: string };
    };
  };
}

// App-consistent points: the agent runs the pre-snapshot command, marks the point in the ordered
// stream only if it succeeded, and always runs the post-snapshot command.
describe('app-consistent points', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let cs: ServiceProcess;
  let credentials: Credentials;
  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('appcons'));
    credentials = await Credentials.create(path.join(dir, 'credentials'));
    cs = await startCacheStore(path.join(dir, 'cs'), '127.0.0.1:0', credentials.cacheStoreAuth());
  });
  afterAll(async () => {
    await cs?.stop();
    await cleanup?.();
  });

  async function runAgent(
    name: string,
    pre: string,
    post: string,
  ): Promise<{ status: Status; journal: string[]; log: string }> {
    const image = path.join(dir, `${name}.img`);
    await makeImage(image, 16 << 20);
    const log = path.join(dir, `${name}.log`);
    const dataDir = path.join(dir, `${name}-data`);
    const agent = await startAgent({
      vm: name,
      disks: [{ id: 'os', path: image }],
      dataDir,
      tokenFile: await credentials.agentTokenFile(name),
      args: [
        '--cache-store',
        `ws://${cs.listen}`,
        '--status',
        '127.0.0.1:0',
        '--app-consistent-frequency',
        '1s',
        '--pre-snapshot',
        `${pre} && echo pre >> ${log}`,
        '--post-snapshot',
        `${post} && echo post >> ${log}`,
      ],
    });
    const statusUrl = `http://${String(agent.ready['status'])}/status`;
    await runOk('qemu-io', ['-f', 'raw', agent.uri('os'), '-c', 'write -P 0x42 0 64k']);
    const status = await waitUntil(
      'two attempts',
      async () => {
        const s = (await getJson(statusUrl)) as Status;
        return s.replication.appConsistent.taken + s.replication.appConsistent.failed >= 2 ? s : undefined;
      },
      20_000,
    );
    expect(await agent.stop()).toBe(0);
    const journal = (await runOk('node', [JOURNAL_CLI, 'dump', '--data-dir', dataDir])).stdout.trim().split('\n');
    return { status, journal, log: await fsp.readFile(log, 'utf8').catch(() => '') };
  }

  it('marks a point in the stream after a successful pre-snapshot command, then runs the post command', async () => {
    const r = await runAgent('good01', 'true', 'true');
    expect(r.status.replication.appConsistent.taken).toBeGreaterThanOrEqual(2);
    expect(r.status.replication.appConsistent.failed).toBe(0);
    const markers = r.journal.filter((l) => l.split(' ')[1] === 'app');
    expect(markers.length).toBeGreaterThanOrEqual(2);
    expect(r.status.replication.appConsistent.last?.lsn).toBeGreaterThan(0);
    expect(r.log).toMatch(/^(pre\npost\n){2,}$/);
  });

  it('writes no marker when the pre-snapshot command fails, reports it, and still runs the post command', async () => {
    const r = await runAgent('bad01', 'exit 3', 'true');
    expect(r.status.replication.appConsistent.taken).toBe(0);
    expect(r.status.replication.appConsistent.failed).toBeGreaterThanOrEqual(2);
    expect(r.status.replication.appConsistent.lastFailure?.error).toContain('exit 3');
    expect(r.journal.filter((l) => l.split(' ')[1] === 'app')).toEqual([]);
    expect(r.log).toMatch(/^(post\n){2,}$/);
  });
});
