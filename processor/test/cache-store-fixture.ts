import { CacheStoreServer, FileStreamStore, type CacheStoreStatus } from '@site-recovery/cache-store';
import { createLogger, type DiskInfo } from '@site-recovery/shared';
import { TestAgent } from './test-agent.js';
import { WireTap } from './wire-tap.js';

/**
 * The real cache-store (its server over its file store, in this process on a free loopback port)
 * with a {@link WireTap} in front of it for the processor. Agents connect to the cache-store itself.
 */
export class CacheStoreFixture {
  private readonly agents: TestAgent[] = [];

  private constructor(
    private readonly server: CacheStoreServer,
    private readonly store: FileStreamStore,
    readonly tap: WireTap,
  ) {}

  /** A cache-store keeping its log in `dataDir`. */
  static async start(dataDir: string): Promise<CacheStoreFixture> {
    const log = createLogger('test-cache-store', process.env['SR_LOG_LEVEL'] ?? 'silent');
    const store = await FileStreamStore.open(dataDir, { log });
    const server = await CacheStoreServer.start({ store, log, host: '127.0.0.1', port: 0 });
    const tap = await WireTap.start(`ws://${server.listen}/`);
    return new CacheStoreFixture(server, store, tap);
  }

  /** Where the processor connects (through the tap). */
  get url(): string {
    return this.tap.url;
  }

  /**
   * An agent streaming `generation` of `vm` straight to the cache-store, in replication group `group` and
   * in `mode` if given.
   */
  async agent(
    vm: string,
    generation: string,
    disks: readonly DiskInfo[],
    group?: string,
    mode?: 'watch',
  ): Promise<TestAgent> {
    const a = await TestAgent.connect(`ws://${this.server.listen}/`, vm, generation, disks, group, mode);
    this.agents.push(a);
    return a;
  }

  status(): CacheStoreStatus {
    return this.server.status();
  }

  async stop(): Promise<void> {
    await Promise.all(this.agents.map((a) => a.close()));
    await this.tap.close();
    await this.server.close();
    await this.store.close();
  }
}
