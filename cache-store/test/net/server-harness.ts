import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createLogger, type DiskInfo, type SrError } from '@site-recovery/shared';
import { FileStreamStore, type FileStreamStoreOptions } from '../../src/log/file-stream-store.js';
import { CacheStoreServer } from '../../src/net/server.js';
import type { CacheStoreLimits } from '../../src/net/server-options.js';
import type {
  StoredFrame,
  StreamLog,
  StreamLogStats,
  StreamLogWatcher,
  StreamStore,
} from '../../src/log/stream-log.js';

export interface RunningServer {
  readonly server: CacheStoreServer;
  readonly store: StreamStore;
  readonly dataDir: string;
  readonly url: string;
  status(): Promise<{ vms: Record<string, unknown>[] }>;
  stop(): Promise<void>;
}

const log = createLogger('cache-store-test', process.env['SR_TEST_LOG_LEVEL'] ?? 'silent');

/** A cache-store in this process on a free loopback port, over a file store in `dataDir` (default: fresh). */
export async function startServer(
  o: {
    dataDir?: string;
    store?: FileStreamStoreOptions;
    limits?: Partial<CacheStoreLimits>;
    wrap?: (s: StreamStore) => StreamStore;
  } = {},
): Promise<RunningServer> {
  const dataDir = o.dataDir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-server-')));
  const file = await FileStreamStore.open(dataDir, { log, ...o.store });
  const store = o.wrap ? o.wrap(file) : file;
  const server = await CacheStoreServer.start({ store, log, host: '127.0.0.1', port: 0, limits: o.limits ?? {} });
  const base = `127.0.0.1:${server.address.port}`;
  return {
    server,
    store,
    dataDir,
    url: `ws://${base}/`,
    status: async () => (await (await fetch(`http://${base}/status`)).json()) as { vms: Record<string, unknown>[] },
    stop: async () => {
      await server.close();
      await store.close();
    },
  };
}

/**
 * A store whose logs report durability only when the test opens the gate: shows that the server
 * acknowledges what the log calls durable and nothing before.
 */
export class GatedStore implements StreamStore {
  private readonly wrapped = new Map<StreamLog, GatedLog>();
  gateOpen = false;

  constructor(private readonly inner: StreamStore) {}

  private wrap(l: StreamLog): GatedLog {
    let g = this.wrapped.get(l);
    if (g === undefined) {
      g = new GatedLog(l, this);
      this.wrapped.set(l, g);
    }
    return g;
  }

  open(): void {
    this.gateOpen = true;
    for (const g of this.wrapped.values()) g.flush();
  }

  logs(): readonly StreamLog[] {
    return this.inner.logs().map((l) => this.wrap(l));
  }

  get(vm: string): StreamLog | undefined {
    const l = this.inner.get(vm);
    return l && this.wrap(l);
  }

  damaged(): ReturnType<StreamStore['damaged']> {
    return this.inner.damaged();
  }

  async openGeneration(vm: string, generation: string, disks: readonly DiskInfo[]): Promise<StreamLog> {
    return this.wrap(await this.inner.openGeneration(vm, generation, disks));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

class GatedLog implements StreamLog {
  private readonly watchers = new Set<StreamLogWatcher>();
  private held: { frames: readonly StoredFrame[]; lsn: number }[] = [];
  private durable: number;

  constructor(
    private readonly inner: StreamLog,
    private readonly gate: GatedStore,
  ) {
    this.durable = inner.durableLsn;
    inner.watch({
      durable: (frames, lsn) => {
        this.held.push({ frames, lsn });
        if (gate.gateOpen) this.flush();
      },
      failed: (err: SrError) => this.watchers.forEach((w) => w.failed(err)),
    });
  }

  flush(): void {
    const held = this.held;
    this.held = [];
    for (const h of held) {
      this.durable = h.lsn;
      this.watchers.forEach((w) => w.durable(h.frames, h.lsn));
    }
  }

  get vm(): string {
    return this.inner.vm;
  }
  get generation(): string {
    return this.inner.generation;
  }
  get disks(): readonly DiskInfo[] {
    return this.inner.disks;
  }
  get firstLsn(): number {
    return this.inner.firstLsn;
  }
  get appendedLsn(): number {
    return this.inner.appendedLsn;
  }
  get durableLsn(): number {
    return this.durable;
  }
  get appliedLsn(): number {
    return this.inner.appliedLsn;
  }
  get pendingBytes(): number {
    return this.inner.pendingBytes;
  }
  append(frame: StoredFrame): void {
    this.inner.append(frame);
  }
  sync(): Promise<number> {
    return this.inner.sync();
  }
  resume(): Promise<number> {
    return this.inner.resume();
  }
  read(from: number): AsyncIterable<StoredFrame> {
    return this.inner.read(from);
  }
  release(lsn: number): Promise<void> {
    return this.inner.release(lsn);
  }
  watch(watcher: StreamLogWatcher): () => void {
    this.watchers.add(watcher);
    return () => this.watchers.delete(watcher);
  }
  stats(): StreamLogStats {
    return { ...this.inner.stats(), durableLsn: this.durable };
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
