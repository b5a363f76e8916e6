import path from 'node:path';
import { ErrorCode, SrError, checkId, type SourceMode } from '@site-recovery/shared';
import { AuditLog } from './api/audit-log.js';
import { ControlServer } from './api/control-server.js';
import { controlRoutes, type ControlApiTarget } from './api/control-routes.js';
import { PointError, PointErrorCode } from './api/error-codes.js';
import { FailoverService } from './failover/failover.js';
import { DEFAULT_CACHE_STORE_UNREACHABLE_MS, assessHealth, type HealthReport } from './health.js';
import { DEFAULT_CONFIRM_INTERVAL_MS, type ProcessorConfig } from './processor-config.js';
import { FileReplicaStore } from './replica/file-replica-store.js';
import { ReplicationGroups, type GroupStatus } from './groups/replication-groups.js';
import { pointInfo } from './points/recovery-point.js';
import { PointScheduler } from './points/scheduler.js';
import { VmConfigs, type VmConfig } from './vm-config.js';
import type { AgentPolicy } from './stream/puller-connection.js';
import { DEFAULT_PULLER } from './stream/puller-options.js';
import { Puller, type PullerStatus, type VmDirectory } from './stream/puller.js';
import { SourceModes } from './stream/source-modes.js';
import { asStorageError } from './stream/storage-error.js';
import { VmReplication, type VmReplicationHooks, type VmStatus } from './stream/vm-replication.js';

export type { ProcessorAuth, ProcessorConfig, ProcessorOptions } from './processor-config.js';
export { DEFAULT_CONFIRM_INTERVAL_MS } from './processor-config.js';

export interface ProcessorStatus {
  readonly cacheStore: PullerStatus;
  /** Each VM with the replication group it is in (null: none). */
  readonly vms: (VmStatus & { readonly group: string | null })[];
  readonly groups: GroupStatus[];
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
  private audit: AuditLog | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;
  private readonly hooks: VmReplicationHooks;
  private readonly configs: VmConfigs;
  private readonly failovers: FailoverService;
  private readonly scheduler: PointScheduler;
  private readonly dataDir: string | undefined;
  /** Set in `start`, before any stream is applied. */
  private groups!: ReplicationGroups;
  /** Set in `start`, before any replica is opened. */
  private modes!: SourceModes;

  private constructor(private readonly config: ProcessorConfig) {
    const o = config.options ?? {};
    this.hooks = {
      confirm: (vm, generation, lsn) => this.puller.confirm(vm, generation, lsn),
      resubscribe: (vm) => this.puller.resubscribe(vm),
      group: {
        marked: (vm, mark, point) => this.groups.marked(vm, mark, point),
        committed: (vm, commit) => this.groups.committed(vm, commit),
        aborted: (vm, abort) => this.groups.aborted(vm, abort),
      },
    };
    this.puller = new Puller(
      {
        ...o,
        url: config.cacheStoreUrl,
        ...(config.auth?.cacheStoreToken !== undefined ? { token: config.auth.cacheStoreToken } : {}),
        ...(config.cacheStoreCa !== undefined ? { ca: config.cacheStoreCa } : {}),
      },
      this,
      config.log,
    );
    this.dataDir = config.dataDir ?? (config.store instanceof FileReplicaStore ? config.store.dataDir : undefined);
    this.configs = new VmConfigs(this.dataDir, o.defaultVmConfig);
    this.failovers = new FailoverService(
      {
        dataDir: this.dataDir ?? '',
        log: config.log,
        vm: (name) => this.vms.get(checkId('VM name', name)),
        config: (vm) => this.vmConfig(vm),
        cacheStoreConnected: () => this.puller.status().connected,
        resubscribe: () =>
          this.puller.restart(new SrError(ErrorCode.SHUTTING_DOWN, 'failover abandoned; resubscribing')),
      },
      config.targetPlanner,
      o,
    );
    this.scheduler = new PointScheduler(
      () => this.vms.values(),
      (vm) => this.vmConfig(vm),
      config.log,
      o,
    );
  }

  static async start(config: ProcessorConfig): Promise<Processor> {
    const p = new Processor(config);
    p.modes = await SourceModes.load(p.dataDir);
    await p.openReplicas();
    try {
      if (p.dataDir !== undefined) for (const v of p.vms.values()) await p.failovers.restore(v);
      p.groups = await ReplicationGroups.open(
        {
          dataDir: p.dataDir,
          log: config.log,
          vm: (name) => p.vms.get(name),
          vms: () => p.vms.values(),
          sendPolicy: async (vm) => void p.puller.sendPolicy(vm, await p.policy(vm)),
          failovers: p.failovers,
        },
        config.options,
      );
      await p.groups.rebuild();
      const { auth } = config;
      const auditFile =
        auth?.auditLog ??
        (auth !== undefined && p.dataDir !== undefined ? path.join(p.dataDir, 'audit.log') : undefined);
      if (auditFile !== undefined) p.audit = await AuditLog.open(auditFile, config.log);
      p.control = await ControlServer.listen(
        {
          host: config.listenHost,
          port: config.listenPort,
          ...(config.tls !== undefined ? { tls: config.tls } : {}),
          ...(config.options?.maxBodyBytes !== undefined ? { maxBodyBytes: config.options.maxBodyBytes } : {}),
        },
        controlRoutes(p.controlTarget(), p.audit),
        config.log,
        auth === undefined
          ? undefined
          : {
              ...(auth.verifier !== undefined ? { verifier: auth.verifier } : {}),
              ...(auth.allowedHosts !== undefined ? { allowedHosts: auth.allowedHosts } : {}),
              ...(p.audit !== undefined ? { audit: p.audit } : {}),
            },
      );
    } catch (err) {
      await p.audit?.close();
      await Promise.all([...p.vms.values()].map((v) => v.close()));
      throw err;
    }
    p.puller.start();
    p.scheduler.start();
    p.timer = setInterval(() => {
      for (const v of p.vms.values()) void v.flush();
    }, config.options?.confirmIntervalMs ?? DEFAULT_CONFIRM_INTERVAL_MS);
    config.log.info(
      {
        listen: p.listen,
        cacheStore: config.cacheStoreUrl,
        vms: p.vms.size,
        authentication: config.auth?.verifier !== undefined,
        tls: config.tls !== undefined,
        ...(p.audit !== undefined ? { auditLog: p.audit.file } : {}),
      },
      'processor started',
    );
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
    v.scans.mode = this.modes.of(vm);
    this.vms.set(vm, v);
    return v;
  }

  status(): ProcessorStatus {
    return {
      cacheStore: this.puller.status(),
      vms: [...this.vms.values()].map((v) => ({ ...v.status(), group: this.groups.of(v.vm) ?? null })),
      groups: this.groups.status(),
    };
  }

  /** Whether every VM is replicated and protected and the cache-store is within reach (see health.ts). */
  health(): HealthReport {
    return assessHealth({
      now: Date.now(),
      cacheStoreUrl: this.config.cacheStoreUrl,
      cacheStoreConnected: this.puller.status().connected,
      cacheStoreUnreachableSince: this.puller.unreachableSince(),
      cacheStoreUnreachableMs: this.config.options?.cacheStoreUnreachableMs ?? DEFAULT_CACHE_STORE_UNREACHABLE_MS,
      vms: [...this.vms.values()].map((v) => ({ vm: v.vm, trouble: v.trouble() })),
      pointFailures: this.scheduler.failing(),
    });
  }

  /**
   * Stops cleanly: no new messages, records in flight land, everything applied is made durable and
   * confirmed while the connection is still up, then the connection, listener and replicas close.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.timer !== undefined) clearInterval(this.timer);
      await this.scheduler.stop();
      await this.puller.stop();
      await Promise.all([...this.vms.values()].map((v) => v.settle()));
      await this.puller.close();
      await this.control?.close();
      await this.audit?.close();
      await Promise.all([...this.vms.values()].map((v) => v.close()));
      this.config.log.info('processor stopped');
    })();
    return this.closing;
  }

  /** The scheduler, for tests that drive point schedules and retention step by step. */
  get points(): PointScheduler {
    return this.scheduler;
  }

  /** What the control API acts on. */
  private controlTarget(): ControlApiTarget {
    const f = this.failovers;
    return {
      health: () => this.health(),
      status: () => this.status(),
      points: (vm) => (this.known(vm).current?.points.list() ?? []).map(pointInfo),
      config: (vm) => this.vmConfig(this.known(vm).vm),
      putConfig: (vm, body) => this.putConfig(this.known(vm).vm, body),
      failover: (vm, body) => f.failover(this.withDataDir(vm), body, this.groups.splitOf(vm)),
      testFailover: (vm, body) => f.testFailover(this.withDataDir(vm), body),
      cleanupTestFailover: (vm) => f.cleanupTestFailover(this.withDataDir(vm)),
      commit: (vm) => f.commit(this.withDataDir(vm)),
      groups: this.groupTarget(),
    };
  }

  private groupTarget(): ControlApiTarget['groups'] {
    const g = this.groups;
    const id = (group: string): string => checkId('group name', group);
    return {
      members: (group) => g.members(group),
      config: (group) => g.config(id(group)),
      putConfig: (group, body) => g.putConfig(id(group), body),
      points: (group) => g.points(group),
      failover: (group, body) => g.failoverGroup(this.needDataDir(group), body),
      testFailover: (group, body) => g.testFailoverGroup(this.needDataDir(group), body),
      cleanupTestFailover: (group) => g.cleanupTestFailoverGroup(this.needDataDir(group)),
    };
  }

  private known(vm: string): VmReplication {
    const v = this.vms.get(checkId('VM name', vm));
    if (v === undefined) throw new PointError(PointErrorCode.VM_NOT_FOUND, `no VM ${vm} on this processor`);
    return v;
  }

  private withDataDir(vm: string): string {
    return this.known(this.needDataDir(vm)).vm;
  }

  /** `name`, once it is sure failover has somewhere to put recovered disks. */
  private needDataDir(name: string): string {
    if (this.dataDir === undefined)
      throw new SrError(ErrorCode.BAD_OPTION, 'this processor has no data directory for recovered disks');
    return name;
  }

  async policy(vm: string): Promise<AgentPolicy> {
    const multiVmFrequencyMs = this.groups.multiVmFrequencyMs(vm);
    return {
      appConsistentFrequencyMs: (await this.vmConfig(vm)).appConsistentFrequencyMs,
      ...(multiVmFrequencyMs !== undefined ? { multiVmFrequencyMs } : {}),
    };
  }

  noteGroup(vm: string, group: string | undefined): Promise<void> {
    return this.groups.noteGroup(vm, group);
  }

  async noteMode(vm: string, mode: SourceMode): Promise<void> {
    if (await this.modes.set(vm, mode)) this.config.log.info({ vm, mode }, "the VM's agent is in a new mode");
    const v = this.vms.get(vm);
    if (v !== undefined) v.scans.mode = mode;
  }

  private vmConfig(vm: string): Promise<VmConfig> {
    return this.configs.get(vm);
  }

  private async putConfig(vm: string, body: unknown): Promise<VmConfig> {
    const next = await this.configs.put(vm, body);
    // The agent takes app-consistent points; it learns the frequency through the cache-store.
    this.puller.sendPolicy(vm, await this.policy(vm));
    return next;
  }

  private async openReplicas(): Promise<void> {
    const { store, log, options } = this.config;
    for (const vm of await store.list()) {
      try {
        const replica = await store.open(vm);
        if (replica === undefined) continue;
        const info = replica.info();
        log.info(
          { vm, generation: info.generation, appliedLsn: info.appliedLsn, initialSync: info.initialSync.state },
          'replica opened',
        );
        const v = new VmReplication(vm, store, replica, this.hooks, log, options);
        v.scans.mode = this.modes.of(vm);
        this.vms.set(vm, v);
      } catch (err) {
        const e = asStorageError(err, `replica of ${vm} cannot be opened`);
        log.error(
          { vm, code: e.code, err: e.message },
          'replica cannot be opened; the VM is not replicated until it is repaired',
        );
        this.vms.set(vm, new VmReplication(vm, store, undefined, this.hooks, log, options, e));
      }
    }
  }
}
