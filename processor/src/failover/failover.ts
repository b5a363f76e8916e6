import fsp from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ErrorCode, SrError, type Logger } from '@site-recovery/shared';
import { PointError, PointErrorCode } from '../api/error-codes.js';
import { failoverDir, materializedDiskFile, testFailoverDir, testFailoverStateFile, vmFailoverDir } from '../names.js';
import { pointRef, type RecoveryPoint } from '../points/recovery-point.js';
import type { Replica } from '../replica/replica-store.js';
import type { VmConfig } from '../vm-config.js';
import type { FailoverState, VmReplication } from '../stream/vm-replication.js';
import {
  aroundDir,
  beginTestFailoverRecord,
  readFailoverRecord,
  readTestFailoverRecord,
  removeFailoverRecord,
  writeFailoverRecord,
} from './failover-state.js';
import { placedAddresses, writeManifest, type GroupSplit, type Manifest } from './manifest.js';
import { resolvePoint, type CatchUp } from './point-spec.js';
import { defaultTargetPlanner, type ResolvedTarget, type TargetPlanner } from './target-planner.js';
import type { TakenAddress } from './target-resources.js';

export interface FailoverOptions {
  /** How long 'latest' waits for the replica to catch up with the cache-store. Default 30 s. */
  readonly latestDeadlineMs?: number;
  /** How often 'latest' checks whether it has caught up. Default 20 ms. */
  readonly latestPollMs?: number;
}

const DEFAULT_LATEST_DEADLINE_MS = 30_000;
const DEFAULT_LATEST_POLL_MS = 20;

/** What the processor gives the failover service. */
export interface FailoverContext {
  readonly dataDir: string;
  readonly log: Logger;
  vm(name: string): VmReplication | undefined;
  config(vm: string): Promise<VmConfig>;
  /** Whether the cache-store is connected (only then is its last LSN worth waiting for). */
  cacheStoreConnected(): boolean;
  /** Has every VM subscribed again from its applied position (after a failover that did not complete). */
  resubscribe(): void;
}

const FailoverBody = z
  .object({
    point: z.string().min(1).max(64),
    test: z.boolean().optional(),
    network: z.string().min(1).max(128).optional(),
    deadlineMs: z.number().int().min(0).max(3_600_000).optional(),
  })
  .strict();
const TestBody = z.object({ point: z.string().min(1).max(64), network: z.string().min(1).max(128) }).strict();

/**
 * Failover, test failover, their cleanup and commit. A failover picks (or cuts) a point, recovers
 * it into new disk files beside a manifest, and — unless it is a test — stops applying the VM's
 * stream for good. Each step is planned before anything is written, and what a test failover
 * creates is recorded before it is created, so its cleanup removes exactly that.
 */
export class FailoverService {
  /** VMs with a real failover running (guards the window before its state file exists). */
  private readonly running = new Set<string>();
  private readonly testing = new Set<string>();
  /**
   * Addresses this process planned, kept from planning on for as long as the VM holds them (until a
   * failure or a test cleanup), so a plan made while another one's manifest is being written sees it.
   */
  private readonly reserved = new Map<string, TakenAddress>();

  constructor(
    private readonly ctx: FailoverContext,
    private readonly planner: TargetPlanner = defaultTargetPlanner,
    private readonly o: FailoverOptions = {},
  ) {}

  /** Brings back the failover state of each VM after a restart; an interrupted failover is undone. */
  async restore(v: VmReplication): Promise<void> {
    const { dataDir, log } = this.ctx;
    const s = await readFailoverRecord(dataDir, v.vm);
    if (s === undefined) return;
    if (s.state === 'in-progress') {
      if (s.resourceGroup !== undefined)
        await fsp.rm(failoverDir(dataDir, v.vm, s.resourceGroup), { recursive: true, force: true });
      else
        log.warn(
          { vm: v.vm, dir: vmFailoverDir(dataDir, v.vm) },
          'the interrupted failover recorded no resource group; remove its disks from this directory by hand',
        );
      await removeFailoverRecord(dataDir, v.vm);
      log.warn({ vm: v.vm }, 'a failover was interrupted by a restart; replication continues');
      return;
    }
    await v.setFailover(s.state);
  }

  /** `split`: the VM's group is left behind (said in the manifest). */
  async failover(vmName: string, body: unknown, split?: GroupSplit): Promise<Manifest> {
    const b = parseBody(FailoverBody, body);
    if (b.test === true) return this.testFailover(vmName, { point: b.point, network: b.network ?? '' });
    const v = this.vm(vmName);
    if (this.running.has(vmName) || v.failover === 'in-progress')
      throw new PointError(PointErrorCode.FAILOVER_IN_PROGRESS, `a failover of ${vmName} is in progress`);
    if (v.failover !== 'none')
      throw new PointError(PointErrorCode.FAILED_OVER, `${vmName} has already been failed over (${v.failover})`);
    this.running.add(vmName);
    const { dataDir } = this.ctx;
    const key = `failover/${vmName}`;
    let placed = false;
    try {
      const replica = this.replica(v);
      const point = await resolvePoint(v, replica, b.point, this.catchUp(b.deadlineMs));
      // Planned and reserved in one synchronous step, so two failovers at once cannot pick one address.
      const target = this.plan(vmName, await this.ctx.config(vmName), false, b.network, await placedAddresses(dataDir));
      this.reserved.set(key, { network: target.network, ip: target.ip });
      const dir = failoverDir(dataDir, vmName, target.resourceGroup);
      const record = { point: point.id, resourceGroup: target.resourceGroup };
      await writeFailoverRecord(dataDir, vmName, { state: 'in-progress', ...record });
      await v.setFailover('in-progress');
      try {
        await fsp.rm(dir, { recursive: true, force: true });
        const manifest = await this.materialize(replica, point, dir, 'failover', target, split);
        await writeFailoverRecord(dataDir, vmName, { state: 'failed-over', ...record });
        await v.setFailover('failed-over');
        this.ctx.log.info({ vm: vmName, point: point.id, dir }, 'failed over');
        placed = true;
        return manifest;
      } catch (err) {
        await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
        await removeFailoverRecord(dataDir, vmName).catch(() => undefined);
        await v.setFailover('none');
        this.ctx.resubscribe();
        throw err;
      }
    } finally {
      this.running.delete(vmName);
      if (!placed) this.reserved.delete(key);
    }
  }

  async testFailover(vmName: string, body: unknown): Promise<Manifest> {
    const b = parseBody(TestBody, body);
    const v = this.vm(vmName);
    const { dataDir } = this.ctx;
    if (this.testing.has(vmName) || (await readTestFailoverRecord(dataDir, vmName)) !== undefined) {
      throw new PointError(
        PointErrorCode.FAILOVER_IN_PROGRESS,
        `${vmName} already has a test failover; clean it up first`,
      );
    }
    this.testing.add(vmName);
    const key = `test/${vmName}`;
    let placed = false;
    try {
      const replica = this.replica(v);
      const point = await resolvePoint(v, replica, b.point, this.catchUp(undefined));
      const target = this.plan(vmName, await this.ctx.config(vmName), true, b.network, await placedAddresses(dataDir));
      this.reserved.set(key, { network: target.network, ip: target.ip });
      await beginTestFailoverRecord(dataDir, vmName, point.id);
      const manifest = await this.materialize(
        replica,
        point,
        testFailoverDir(dataDir, vmName),
        'test-failover',
        target,
      );
      placed = true;
      return manifest;
    } finally {
      this.testing.delete(vmName);
      if (!placed) this.reserved.delete(key);
    }
  }

  /**
   * Takes back a failover that is not committed (a group failover whose next member failed): its
   * disks and state go, and the VM replicates again from its applied position.
   */
  async undo(vmName: string): Promise<void> {
    const v = this.vm(vmName);
    if (v.failover !== 'failed-over') return;
    const { dataDir } = this.ctx;
    const s = await readFailoverRecord(dataDir, vmName);
    if (s?.resourceGroup !== undefined)
      await fsp.rm(failoverDir(dataDir, vmName, s.resourceGroup), { recursive: true, force: true });
    await removeFailoverRecord(dataDir, vmName);
    this.reserved.delete(`failover/${vmName}`);
    await v.setFailover('none');
    this.ctx.resubscribe();
    this.ctx.log.warn({ vm: vmName }, 'failover taken back; replication continues');
  }

  /** Whether the VM has a test failover (running or left to clean up). */
  async hasTestFailover(vmName: string): Promise<boolean> {
    return this.testing.has(vmName) || (await readTestFailoverRecord(this.ctx.dataDir, vmName)) !== undefined;
  }

  /** Removes everything the VM's test failover created, deepest first. */
  async cleanupTestFailover(vmName: string): Promise<{ removed: string[] }> {
    this.vm(vmName);
    if (this.testing.has(vmName))
      throw new PointError(PointErrorCode.FAILOVER_IN_PROGRESS, `the test failover of ${vmName} is still running`);
    const { dataDir } = this.ctx;
    const record = await readTestFailoverRecord(dataDir, vmName);
    if (record === undefined)
      throw new PointError(PointErrorCode.NO_TEST_FAILOVER, `${vmName} has no test failover to clean up`);
    const removed = [
      ...(await removeTree(testFailoverDir(dataDir, vmName))),
      ...(await removeTree(testFailoverStateFile(dataDir, vmName))),
    ];
    this.reserved.delete(`test/${vmName}`);
    // Directories it had to create around them go only if nothing else has moved in since.
    const around = record.createdDirs.map((d) => aroundDir(dataDir, vmName, d));
    for (const p of around.sort((a, b) => b.length - a.length)) if (await removeEmptyDir(p)) removed.push(p);
    return { removed };
  }

  /** After a failover: keeps only the failed-over point (newer ones merge into it, older ones go). */
  async commit(vmName: string): Promise<{ vm: string; state: FailoverState; point: string | null; removed: string[] }> {
    const v = this.vm(vmName);
    if (v.failover === 'none' || v.failover === 'in-progress')
      throw new PointError(PointErrorCode.NOT_FAILED_OVER, `${vmName} has not been failed over; nothing to commit`);
    const s = await readFailoverRecord(this.ctx.dataDir, vmName);
    if (s === undefined)
      throw new SrError(ErrorCode.STATE_MISMATCH, `the failover state of ${vmName} is gone; nothing to commit`);
    const replica = this.replica(v);
    const removed = replica.points
      .list()
      .map((p) => p.id)
      .filter((id) => id !== s.point);
    if (!(await replica.points.remove(removed, false)))
      throw new PointError(
        PointErrorCode.FAILOVER_IN_PROGRESS,
        `a test failover of ${vmName} is reading its points; try again`,
      );
    await writeFailoverRecord(this.ctx.dataDir, vmName, { ...s, state: 'committed' });
    await v.setFailover('committed');
    return { vm: vmName, state: 'committed', point: s.point ?? null, removed };
  }

  private plan(
    vm: string,
    config: VmConfig,
    test: boolean,
    network: string | undefined,
    placed: readonly TakenAddress[],
  ): ResolvedTarget {
    return this.planner.plan({
      vm,
      source: config.source,
      target: config.target,
      test,
      ...(network !== undefined ? { network } : {}),
      taken: [...placed, ...this.reserved.values()],
    });
  }

  private catchUp(deadlineMs: number | undefined): CatchUp {
    return {
      deadlineMs: deadlineMs ?? this.o.latestDeadlineMs ?? DEFAULT_LATEST_DEADLINE_MS,
      pollMs: this.o.latestPollMs ?? DEFAULT_LATEST_POLL_MS,
      connected: () => this.ctx.cacheStoreConnected(),
      log: this.ctx.log,
    };
  }

  private async materialize(
    replica: Replica,
    point: RecoveryPoint,
    dir: string,
    kind: Manifest['kind'],
    target: ResolvedTarget,
    split?: GroupSplit,
  ): Promise<Manifest> {
    const plan = replica.points.plan(point.id);
    if (plan === undefined)
      throw new PointError(PointErrorCode.POINT_PRUNED, `point ${point.id} was removed before it could be recovered`);
    await fsp.mkdir(dir, { recursive: true });
    const targets = plan.disks.map((d) => materializedDiskFile(dir, d.id));
    await replica.points.materialize(plan, targets);
    const manifest: Manifest = {
      vm: replica.vm,
      kind,
      point: pointRef(point),
      createdAt: new Date().toISOString(),
      target,
      disks: plan.disks.map((d, i) => ({ id: d.id, size: d.size, path: targets[i]! })),
      ...(split !== undefined ? { split } : {}),
    };
    await writeManifest(dir, manifest);
    return manifest;
  }

  private vm(name: string): VmReplication {
    const v = this.ctx.vm(name);
    if (v === undefined) throw new PointError(PointErrorCode.VM_NOT_FOUND, `no VM ${name} on this processor`);
    return v;
  }

  private replica(v: VmReplication): Replica {
    const r = v.current;
    if (r === undefined) throw new PointError(PointErrorCode.RESYNCING, `${v.vm} has no replica yet`);
    return r;
  }
}

/** A request body checked against `schema`; SR_BAD_OPTION naming the first bad field otherwise. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body ?? {});
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new SrError(ErrorCode.BAD_OPTION, `${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`);
  }
  return r.data;
}

async function removeEmptyDir(p: string): Promise<boolean> {
  try {
    await fsp.rmdir(p);
    return true;
  } catch {
    return false;
  }
}

/** Removes a file or a directory tree; returns every path it removed (deepest first). */
async function removeTree(p: string): Promise<string[]> {
  let st;
  try {
    st = await fsp.lstat(p);
  } catch {
    return [];
  }
  const out: string[] = [];
  if (st.isDirectory()) for (const name of await fsp.readdir(p)) out.push(...(await removeTree(path.join(p, name))));
  await fsp.rm(p, { recursive: true, force: true });
  out.push(p);
  return out;
}
