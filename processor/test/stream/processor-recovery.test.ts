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

  it('after a failed flush, pauses the VM: confirms nothing more, and has its stream sent again from the durable position', async () => {
    const faults = { failFlushes: 0 };
    const { dataDir, cs, processor } = await cases.start({
      store: (dir) => new FlakyStore(new FileReplicaStore(dir), faults),
      options: { storageRetry: { initialDelayMs: 20, maxDelayMs: 100 } },
    });
    const w = new Workload(DISKS, 31);
    w.random(30, 64 * 1024);
    const agent = await cs.agent(VM, 'g1', DISKS);
    await agent.store(w.range(1, 30));
    await cs.tap.confirmedAtLeast(VM, 30);
    const s0 = await cs.tap.session(0);
    // The stream the retry asks for waits in the tap until the test lets it through.
    cs.tap.hold = (m) => m.t === 'stream';
    w.random(30, 64 * 1024);
    faults.failFlushes = 1;
    await agent.store(w.range(31, 60));
    // Only this VM pauses: the connection stays, and the VM is subscribed again on it from the durable position.
    const again = await s0.waitFor(
      'a second subscription of the VM from LSN 31',
      (m) => m.t === 'subscribe' && m['vm'] === VM && m['from'] === 31,
    );
    expect(again).toMatchObject({ generation: 'g1' });
    expect(s0.fromProcessor.filter((m) => m.t === 'error')).toEqual([]);
    expect(cs.tap.sessions).toHaveLength(1);
    expect(cs.tap.confirmed(VM)).toBe(30);
    const paused = await vmStatus(processor.listen, VM);
    expect(paused).toMatchObject({ state: 'paused', errorCode: 'SR_IO', paused: { code: 'SR_IO' } });
    expect(paused.lastError?.code).toBe('SR_IO');
    // Durability rounds run before the stream comes again: none may persist the records whose fsync
    // failed (a later fsync proves nothing about pages the failed one dropped).
    const vm = processor.get(VM)!;
    for (let round = 0; round < 3; round++) await vm.flush();
    expect((await readState(dataDir, VM)).appliedLsn).toBe(30);
    expect(cs.tap.confirmed(VM)).toBe(30);
    cs.tap.release();
    await cs.tap.confirmedAtLeast(VM, 60);
    expectImages(await replicaBytes(dataDir, VM, DISKS), w.images);
    // The initial copy never finished in this stream (no SYNC marker): resyncing, no longer paused.
    const after = await vmStatus(processor.listen, VM);
    expect(after.state).toBe('resyncing');
    expect(after.paused).toBeUndefined();
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
      retired: () => r.retired(),
      close: () => r.close(),
    };
  }
}
