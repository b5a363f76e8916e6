import type { DiskInfo } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import { FileReplicaStore } from '../../src/replica/file-replica-store.js';
import type { Replica, ReplicaStore } from '../../src/replica/replica-store.js';
import { useProcessorCases } from '../processor-cases.js';
import { Workload } from '../workload.js';
import { expectImages, getJson, readState, replicaBytes, until, vmStatus } from '../helpers.js';
import { DISKS, VM } from './stream-vm.js';

const cases = useProcessorCases('processor-recovery');

describe('processor after a restart or a storage failure', () => {
  it('shows its replicas before the cache-store answers', async () => {
    // Nothing listens on the cache-store address.
    const { processor } = await cases.startUnreachable(async (dataDir) => {
      const r = await new FileReplicaStore(dataDir).create(VM, 'g7', DISKS);
      await r.savePosition({ appliedLsn: 42, initialSync: { state: 'done', done: 10, total: 10 } });
      await r.close();
    });
    const st = await vmStatus(processor.listen, VM);
    expect(st).toMatchObject({
      generation: 'g7',
      appliedLsn: 42,
      durableLsn: 42,
      state: 'replicating',
      initialSync: { state: 'done', percent: 100 },
    });
    const status = await until('a few reconnect attempts', async () => {
      const s = await getJson<{ cacheStore: { connected: boolean; reconnects: number; lastError?: { code: string } } }>(
        processor.listen,
        '/status',
      );
      return s.cacheStore.reconnects >= 2 ? s : undefined;
    });
    expect(status.cacheStore).toMatchObject({ connected: false, lastError: { code: 'SR_IO' } });
  });

  it('after a failed flush, confirms nothing more and has the stream sent again from the durable position', async () => {
    const faults = { failFlushes: 0 };
    const { dataDir, cs, processor } = await cases.start({
      store: (dir) => new FlakyStore(new FileReplicaStore(dir), faults),
    });
    const w = new Workload(DISKS, 31);
    w.random(30, 64 * 1024);
    const agent = await cs.agent(VM, 'g1', DISKS);
    await agent.store(w.range(1, 30));
    await cs.tap.confirmedAtLeast(VM, 30);
    const s0 = await cs.tap.session(0);
    // Later connections hear nothing from the cache-store until the test lets them.
    cs.tap.hold = (_m, s) => s !== s0;
    w.random(30, 64 * 1024);
    faults.failFlushes = 1;
    await agent.store(w.range(31, 60));
    // The failed round drops the connection (a local fault: no error message is sent).
    await s0.closed;
    expect(s0.fromProcessor.filter((m) => m.t === 'error')).toEqual([]);
    expect(cs.tap.confirmed(VM)).toBe(30);
    const failed = await vmStatus(processor.listen, VM);
    expect(failed.lastError?.code).toBe('SR_IO');
    // Durability rounds run before the cache-store answers again: none may persist the records whose
    // fsync failed (a later fsync proves nothing about pages the failed one dropped).
    const vm = processor.get(VM)!;
    for (let round = 0; round < 3; round++) await vm.flush();
    expect((await readState(dataDir, VM)).appliedLsn).toBe(30);
    expect(cs.tap.confirmed(VM)).toBe(30);
    cs.tap.release();
    const s1 = await cs.tap.session(1);
    expect(await s1.subscribeOf(VM)).toMatchObject({ generation: 'g1', from: 31 });
    await cs.tap.confirmedAtLeast(VM, 60);
    expectImages(await replicaBytes(dataDir, VM, DISKS), w.images);
    expect((await vmStatus(processor.listen, VM)).state).not.toBe('error');
  });
});

/** A store whose replicas fail the next `faults.failFlushes` flushes, as a disk that returns EIO would. */
class FlakyStore implements ReplicaStore {
  constructor(
    private readonly inner: ReplicaStore,
    private readonly faults: { failFlushes: number },
  ) {}

  list(): Promise<string[]> {
    return this.inner.list();
  }

  async open(vm: string): Promise<Replica | undefined> {
    const r = await this.inner.open(vm);
    return r && this.wrap(r);
  }

  async create(vm: string, generation: string, disks: readonly DiskInfo[]): Promise<Replica> {
    return this.wrap(await this.inner.create(vm, generation, disks));
  }

  private wrap(r: Replica): Replica {
    const flush = async (): Promise<void> => {
      if (this.faults.failFlushes > 0) {
        this.faults.failFlushes--;
        throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
      }
      await r.flush();
    };
    return {
      vm: r.vm,
      points: r.points,
      info: () => r.info(),
      locate: (i) => r.locate(i),
      apply: (rec) => r.apply(rec),
      read: (d, o, l) => r.read(d, o, l),
      flush,
      savePosition: (p) => r.savePosition(p),
      reset: (g, d) => r.reset(g, d),
      close: () => r.close(),
    };
  }
}
