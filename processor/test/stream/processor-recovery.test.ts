import path from 'node:path';
import { createLogger, type DiskInfo } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import { FileReplicaStore } from '../../src/replica/file-replica-store.js';
import { Processor } from '../../src/processor.js';
import type { Replica, ReplicaStore } from '../../src/replica/replica-store.js';
import { CacheStoreFixture } from '../cache-store-fixture.js';
import { Workload } from '../workload.js';
import {
  MiB,
  deadUrl,
  expectImages,
  getJson,
  readState,
  replicaBytes,
  startProcessor,
  until,
  vmStatus,
  useCaseDirs,
} from '../helpers.js';

const DISKS: DiskInfo[] = [
  { id: 'os', size: 16 * MiB },
  { id: 'data', size: 4 * MiB },
];
const VM = 'web01';

let cs: CacheStoreFixture | undefined;
let processor: Processor | undefined;
const caseDir = useCaseDirs('processor-recovery', async () => {
  await processor?.close();
  await cs?.stop();
  processor = undefined;
  cs = undefined;
});

describe('processor after a restart or a storage failure', () => {
  it('shows its replicas before the cache-store answers', async () => {
    const dataDir = caseDir();
    const store = new FileReplicaStore(dataDir);
    const r = await store.create(VM, 'g7', DISKS);
    await r.savePosition({ appliedLsn: 42, initialSync: { state: 'done', done: 10, total: 10 } });
    await r.close();
    // Nothing listens on the cache-store address.
    processor = await startProcessor(dataDir, await deadUrl());
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
        processor!.listen,
        '/status',
      );
      return s.cacheStore.reconnects >= 2 ? s : undefined;
    });
    expect(status.cacheStore).toMatchObject({ connected: false, lastError: { code: 'SR_IO' } });
  });

  it('after a failed flush, confirms nothing more and has the stream sent again from the durable position', async () => {
    const dir = caseDir();
    const dataDir = path.join(dir, 'processor');
    cs = await CacheStoreFixture.start(path.join(dir, 'cache-store'));
    const flaky = new FlakyStore(new FileReplicaStore(dataDir));
    processor = await Processor.start({
      store: flaky,
      cacheStoreUrl: cs.url,
      listenHost: '127.0.0.1',
      listenPort: 0,
      log: createLogger('test-processor', process.env['SR_LOG_LEVEL'] ?? 'silent'),
      options: { confirmIntervalMs: 20, backoff: { initialDelayMs: 10, maxDelayMs: 100 } },
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
    flaky.failFlushes = 1;
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

/** A store whose replicas fail `flush` on demand, as a disk that returns EIO would. */
class FlakyStore implements ReplicaStore {
  failFlushes = 0;

  constructor(private readonly inner: ReplicaStore) {}

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
      if (this.failFlushes > 0) {
        this.failFlushes--;
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
