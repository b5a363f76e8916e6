import type https from 'node:https';
import type { Logger, SrError, WireLimits } from '@site-recovery/shared';
import type { BackoffOptions } from './backoff.js';
import { ControlServer } from './control-server.js';
import { DEFAULT_PULLER, Puller, type PullerOptions, type PullerStatus, type VmDirectory } from './puller.js';
import type { ReplicaStore } from './replica-store.js';
import { VmReplication, asStorageError, type VmReplicationHooks, type VmReplicationOptions, type VmStatus } from './vm-replication.js';

export interface ProcessorOptions extends VmReplicationOptions, Omit<PullerOptions, 'url' | 'credential' | 'limits' | 'backoff'> {
  /**
   * How often applied records are made durable (replica fsync + position persisted) and confirmed
   * to the cache-store. Confirming per batch would cost an fsync per batch; a round every interval
   * groups them. Default 200 ms.
   */
  readonly confirmIntervalMs?: number;
  readonly backoff?: BackoffOptions;
  readonly limits?: WireLimits;
}

export const DEFAULT_CONFIRM_INTERVAL_MS = 200;

export interface ProcessorConfig {
  readonly store: ReplicaStore;
  /** `ws://` or `wss://` address of the cache-store. */
  readonly cacheStoreUrl: string;
  readonly listenHost: string;
  /** 0 picks a free port. */
  readonly listenPort: number;
  /** Serve the control API over TLS with these options. */
  readonly tls?: https.ServerOptions;
  /** Presented to the cache-store in HELLO. */
  readonly credential?: string;
  readonly log: Logger;
  readonly options?: ProcessorOptions;
}

export interface ProcessorStatus {
  readonly cacheStore: PullerStatus;
  readonly vms: VmStatus[];
}

/**
 * The target-region service: pulls every VM's stream from the cache-store, applies it to that VM's
 * replica, and confirms what is durable. Replicas found in the store are opened at start, so their
 * status is visible before the cache-store is reachable.
 */
export class Processor implements VmDirectory {
  private readonly vms = new Map<string, VmReplication>();
  private readonly puller: Puller;
  private control: ControlServer | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;
  private readonly hooks: VmReplicationHooks;

  private constructor(private readonly config: ProcessorConfig) {
    const o = config.options ?? {};
    this.hooks = {
      confirm: (vm, generation, lsn) => this.puller.confirm(vm, generation, lsn),
      fault: (_vm, err: SrError) => this.puller.restart(err),
    };
    this.puller = new Puller(
      {
        ...o,
        url: config.cacheStoreUrl,
        ...(config.credential !== undefined ? { credential: config.credential } : {}),
      },
      this,
      config.log,
    );
  }

  static async start(config: ProcessorConfig): Promise<Processor> {
    const p = new Processor(config);
    await p.openReplicas();
    try {
      p.control = await ControlServer.listen(
        { host: config.listenHost, port: config.listenPort, ...(config.tls !== undefined ? { tls: config.tls } : {}) },
        { '/health': () => p.health(), '/status': () => p.status() },
        config.log,
      );
    } catch (err) {
      await Promise.all([...p.vms.values()].map((v) => v.close()));
      throw err;
    }
    p.puller.start();
    p.timer = setInterval(() => {
      for (const v of p.vms.values()) void v.flush();
    }, config.options?.confirmIntervalMs ?? DEFAULT_CONFIRM_INTERVAL_MS);
    config.log.info({ listen: p.listen, cacheStore: config.cacheStoreUrl, vms: p.vms.size }, 'processor started');
    return p;
  }

  get listen(): string {
    return this.control?.listen ?? '';
  }

  get(vm: string): VmReplication | undefined {
    return this.vms.get(vm);
  }

  add(vm: string): VmReplication | undefined {
    if (this.vms.size >= (this.config.options?.maxVms ?? DEFAULT_PULLER.maxVms)) return undefined;
    const v = new VmReplication(vm, this.config.store, undefined, this.hooks, this.config.log, this.config.options);
    this.vms.set(vm, v);
    return v;
  }

  status(): ProcessorStatus {
    return { cacheStore: this.puller.status(), vms: [...this.vms.values()].map((v) => v.status()) };
  }

  health(): { ok: true; cacheStore: { connected: boolean }; vms: number; vmsInError: number } {
    const vms = [...this.vms.values()].map((v) => v.status());
    return { ok: true, cacheStore: { connected: this.puller.status().connected }, vms: vms.length, vmsInError: vms.filter((v) => v.state === 'error').length };
  }

  /**
   * Stops cleanly: no new messages, records in flight land, everything applied is made durable and
   * confirmed while the connection is still up, then the connection, listener and replicas close.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.timer !== undefined) clearInterval(this.timer);
      await this.puller.stop();
      await Promise.all([...this.vms.values()].map((v) => v.settle()));
      await this.puller.close();
      await this.control?.close();
      await Promise.all([...this.vms.values()].map((v) => v.close()));
      this.config.log.info('processor stopped');
    })();
    return this.closing;
  }

  private async openReplicas(): Promise<void> {
    const { store, log, options } = this.config;
    for (const vm of await store.list()) {
      try {
        const replica = await store.open(vm);
        if (replica === undefined) continue;
        const info = replica.info();
        log.info({ vm, generation: info.generation, appliedLsn: info.appliedLsn, initialSync: info.initialSync.state }, 'replica opened');
        this.vms.set(vm, new VmReplication(vm, store, replica, this.hooks, log, options));
      } catch (err) {
        const e = asStorageError(err, `replica of ${vm} cannot be opened`);
        log.error({ vm, code: e.code, err: e.message }, 'replica cannot be opened; the VM is not replicated until it is repaired');
        this.vms.set(vm, new VmReplication(vm, store, undefined, this.hooks, log, options, e));
      }
    }
  }
}
