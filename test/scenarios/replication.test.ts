import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicationEnv, requireTools, runFioOk, runOk } from '@site-recovery/test';

// Two VMs (one with two disks) written through their agents by fio and qemu-io at the same time;
// after the stream drains every replica must be byte-identical to its source image.
describe('replication: agent → cache-store → processor', () => {
  let env: ReplicationEnv;
  beforeAll(async () => {
    requireTools(['fio', 'qemu-io']);
    env = await ReplicationEnv.start('e2e');
  });
  afterAll(() => env?.close());

  it('replicas are byte-identical to their sources after a mixed workload on 2 VMs / 3 disks', async () => {
    const web = await env.protect('web01', [
      { id: 'os', size: 256 << 20, extents: [{ offset: 10 << 20, length: 8 << 20 }] },
    ]);
    const db = await env.protect('db01', [
      { id: 'os', size: 128 << 20 },
      { id: 'data', size: 256 << 20, extents: [{ offset: 0, length: 4 << 20 }] },
    ]);
    const fio = (uri: string, extra: string[]): Promise<unknown> =>
      runFioOk([
        '--name=w',
        '--ioengine=nbd',
        `--uri=${uri}`,
        '--rw=randwrite',
        '--bs=4k',
        '--bsrange=4k-256k',
        '--iodepth=16',
        '--size=96m',
        '--runtime=6',
        '--time_based',
        '--fsync=64',
        ...extra,
      ]);
    await Promise.all([
      fio(web.agent.uri('os'), []),
      fio(db.agent.uri('data'), ['--rw=randrw', '--offset=32m']),
      runOk('qemu-io', [
        '-f',
        'raw',
        db.agent.uri('os'),
        '-c',
        'write -P 0x5a 0 8M',
        '-c',
        'write -z 1M 2M',
        '-c',
        'discard 4M 1M',
        '-c',
        'write -P 0x33 100M 3M',
        '-c',
        'flush',
        '-c',
        'write -P 0x44 2M 64k',
        '-c',
        'aio_write -P 0x01 64M 1M',
        '-c',
        'aio_write -P 0x02 64M 1M',
        '-c',
        'aio_flush',
      ]),
    ]);
    for (const vm of [web, db]) {
      const p = await env.drained(vm);
      expect(p.initialSync?.state).toBe('done');
      expect(await env.compare(vm)).toEqual([]);
    }
  });
});
