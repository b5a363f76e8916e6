import fsp from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ErrorCode, SrError, readJsonIfExists, writeFileAtomic, type Logger } from '@site-recovery/shared';
import { PointError, PointErrorCode } from '../api/error-codes.js';
import {
  failoverDir,
  failoverRoot,
  failoverStateFile,
  isPointId,
  manifestFile,
  materializedDiskFile,
  testFailoverDir,
  testFailoverRoot,
  testFailoverStateFile,
} from '../names.js';
import { pointRef, type PointKind, type RecoveryPoint } from '../points/recovery-point.js';
import type { Replica } from '../replica/replica-store.js';
import type { TakenAddress } from './target-resources.js';
import type { SourcePlacement, TargetPlacement, VmConfig } from '../vm-config.js';
import type { FailoverState, VmReplication } from '../stream/vm-replication.js';

/** Where a failed-over VM lands. `planTarget` of target-resources.ts replaces the default below. */
export interface ResolvedTarget {
  readonly resourceGroup: string;
  readonly network: string;
  readonly subnet: string;
  readonly ip: string;
  readonly availabilitySet: string | null;
}

export interface TargetPlanner {
  /** `taken`: addresses VMs placed by other failovers and test failovers hold, so no two get one address. */
  plan(input: {
    vm: string;
    source: SourcePlacement;
    target: TargetPlacement;
    test: boolean;
    network?: string;
    taken?: readonly TakenAddress[];
  }): ResolvedTarget;
}

/** Azure Site Recovery's defaults: an `-asr` resource group and network beside the source's names. */
export const defaultTargetPlanner: TargetPlanner = {
  plan: ({ vm, source, target, network }) => ({
    resourceGroup: target.resourceGroup ?? `${vm}-asr`,
    network: network ?? target.network ?? (source.network !== undefined ? `${source.network}-asr` : 'default-asr'),
    subnet: target.subnet ?? source.subnet ?? 'default',
    ip: target.ip ?? source.ip ?? 'dhcp',
    availabilitySet: target.availabilitySet ?? null,
  }),
};

export interface FailoverOptions {
  /** How long 'latest' waits for the replica to catch up with the cache-store. Default 30 s. */
  readonly latestDeadlineMs?: number;
  /** How often 'latest' checks whether it has caught up. Default 20 ms. */
  readonly latestPollMs?: number;
}

export const DEFAULT_LATEST_DEADLINE_MS = 30_000;
const DEFAULT_LATEST_POLL_MS = 20;

export interface Manifest {
  readonly vm: string;
  readonly kind: 'failover' | 'test-failover';
  readonly point: { id: string; time: string; lsn: number; kind: PointKind };
  readonly createdAt: string;
  readonly target: ResolvedTarget;
  readonly disks: { id: string; size: number; path: string }[];
}

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

const ManifestTargetSchema = z.object({ target: z.object({ network: z.string(), ip: z.string() }) });
const FailoverFileSchema = z.object({
  state: z.enum(['in-progress', 'failed-over', 'committed']),
  point: z.string().optional(),
  dir: z.string().optional(),
});
const TestFileSchema = z.object({ created: z.array(z.string()), dir: z.string(), point: z.string() });

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
    const file = failoverStateFile(this.ctx.dataDir, v.vm);
    const raw = await readJsonIfExists(file);
    if (raw === undefined) return;
    const s = FailoverFileSchema.parse(raw);
    if (s.state === 'in-progress') {
      if (s.dir !== undefined) await fsp.rm(s.dir, { recursive: true, force: true });
      await fsp.rm(file, { force: true });
      this.ctx.log.warn({ vm: v.vm }, 'a failover was interrupted by a restart; replication continues');
      return;
    }
    await v.setFailover(s.state);
  }

  async failover(vmName: string, body: unknown): Promise<Manifest> {
    const b = parse(FailoverBody, body);
    if (b.test === true) return this.testFailover(vmName, { point: b.point, network: b.network ?? '' });
    const v = this.vm(vmName);
    if (this.running.has(vmName) || v.failover === 'in-progress')
      throw new PointError(PointErrorCode.FAILOVER_IN_PROGRESS, `a failover of ${vmName} is in progress`);
    if (v.failover !== 'none')
      throw new PointError(PointErrorCode.FAILED_OVER, `${vmName} has already been failed over (${v.failover})`);
    this.running.add(vmName);
    const stateFile = failoverStateFile(this.ctx.dataDir, vmName);
    const key = `failover/${vmName}`;
    let placed = false;
    try {
      const replica = this.replica(v);
      const point = await this.resolve(v, replica, b.point, b.deadlineMs);
      const config = await this.ctx.config(vmName);
      const taken = await this.placedAddresses();
      // Planned and reserved in one synchronous step, so two failovers at once cannot pick one address.
      const target = this.planner.plan({
        vm: vmName,
        source: config.source,
        target: config.target,
        test: false,
        ...(b.network !== undefined ? { network: b.network } : {}),
        taken: [...taken, ...this.reserved.values()],
      });
      this.reserved.set(key, { network: target.network, ip: target.ip });
      const dir = failoverDir(this.ctx.dataDir, vmName, target.resourceGroup);
      await fsp.mkdir(path.dirname(stateFile), { recursive: true });
      await writeFileAtomic(stateFile, JSON.stringify({ state: 'in-progress', point: point.id, dir }) + '\n');
      await v.setFailover('in-progress');
      try {
        await fsp.rm(dir, { recursive: true, force: true });
        const manifest = await this.materialize(replica, point, dir, 'failover', target);
        await writeFileAtomic(stateFile, JSON.stringify({ state: 'failed-over', point: point.id, dir }) + '\n');
        await v.setFailover('failed-over');
        this.ctx.log.info({ vm: vmName, point: point.id, dir }, 'failed over');
        placed = true;
        return manifest;
      } catch (err) {
        await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
        await fsp.rm(stateFile, { force: true }).catch(() => undefined);
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
    const b = parse(TestBody, body);
    const v = this.vm(vmName);
    const stateFile = testFailoverStateFile(this.ctx.dataDir, vmName);
    if (this.testing.has(vmName) || (await readJsonIfExists(stateFile)) !== undefined) {
      throw new PointError(
        PointErrorCode.FAILOVER_IN_PROGRESS,
        `${vmName} already has a test failover; clean it up first`,
      );
    }
    this.testing.add(vmName);
    let placed = false;
    try {
      const replica = this.replica(v);
      const point = await this.resolve(v, replica, b.point, undefined);
      const config = await this.ctx.config(vmName);
      const taken = await this.placedAddresses();
      const target = this.planner.plan({
        vm: vmName,
        source: config.source,
        target: config.target,
        test: true,
        network: b.network,
        taken: [...taken, ...this.reserved.values()],
      });
      this.reserved.set(`test/${vmName}`, { network: target.network, ip: target.ip });
      const dir = testFailoverDir(this.ctx.dataDir, vmName);
      // Recorded before anything exists, so a cleanup after a crash still finds all of it.
      const created = [stateFile, ...(await missingDirs(dir)), ...(await missingDirs(path.dirname(stateFile)))];
      await fsp.mkdir(path.dirname(stateFile), { recursive: true });
      await writeFileAtomic(stateFile, JSON.stringify({ created, dir, point: point.id }) + '\n');
      const manifest = await this.materialize(replica, point, dir, 'test-failover', target);
      placed = true;
      return manifest;
    } finally {
      this.testing.delete(vmName);
      if (!placed) this.reserved.delete(`test/${vmName}`);
    }
  }

  /** Removes everything the VM's test failover created, deepest first. */
  async cleanupTestFailover(vmName: string): Promise<{ removed: string[] }> {
    this.vm(vmName);
    if (this.testing.has(vmName))
      throw new PointError(PointErrorCode.FAILOVER_IN_PROGRESS, `the test failover of ${vmName} is still running`);
    const stateFile = testFailoverStateFile(this.ctx.dataDir, vmName);
    const raw = await readJsonIfExists(stateFile);
    if (raw === undefined)
      throw new PointError(PointErrorCode.NO_TEST_FAILOVER, `${vmName} has no test failover to clean up`);
    const { created, dir } = TestFileSchema.parse(raw);
    const removed = [...(await removeTree(dir)), ...(await removeTree(stateFile))];
    this.reserved.delete(`test/${vmName}`);
    // Directories it had to create around them go only if nothing else has moved in since.
    for (const p of [...created].sort((a, b) => b.length - a.length)) {
      if (p !== dir && p !== stateFile && (await removeEmptyDir(p))) removed.push(p);
    }
    return { removed };
  }

  /** After a failover: keeps only the failed-over point (newer ones merge into it, older ones go). */
  async commit(vmName: string): Promise<{ vm: string; state: FailoverState; point: string | null; removed: string[] }> {
    const v = this.vm(vmName);
    const stateFile = failoverStateFile(this.ctx.dataDir, vmName);
    if (v.failover === 'none' || v.failover === 'in-progress')
      throw new PointError(PointErrorCode.NOT_FAILED_OVER, `${vmName} has not been failed over; nothing to commit`);
    const s = FailoverFileSchema.parse(await readJsonIfExists(stateFile));
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
    await writeFileAtomic(stateFile, JSON.stringify({ ...s, state: 'committed' }) + '\n');
    await v.setFailover('committed');
    return { vm: vmName, state: 'committed', point: s.point ?? null, removed };
  }

  /** The network and address of every VM a failover or test failover has placed (from the manifests). */
  private async placedAddresses(): Promise<TakenAddress[]> {
    const files: string[] = [];
    for (const vm of await dirNames(failoverRoot(this.ctx.dataDir))) {
      for (const rg of await dirNames(path.join(failoverRoot(this.ctx.dataDir), vm)))
        files.push(manifestFile(path.join(failoverRoot(this.ctx.dataDir), vm, rg)));
    }
    for (const vm of await dirNames(testFailoverRoot(this.ctx.dataDir)))
      files.push(manifestFile(path.join(testFailoverRoot(this.ctx.dataDir), vm)));
    const out: TakenAddress[] = [];
    for (const f of files) {
      const m = ManifestTargetSchema.safeParse(await readJsonIfExists(f).catch(() => undefined));
      if (m.success) out.push({ network: m.data.target.network, ip: m.data.target.ip });
    }
    return out;
  }

  private async materialize(
    replica: Replica,
    point: RecoveryPoint,
    dir: string,
    kind: Manifest['kind'],
    target: ResolvedTarget,
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
    };
    await writeFileAtomic(manifestFile(dir), JSON.stringify(manifest, null, 2) + '\n');
    return manifest;
  }

  /** Turns a point spec into a point, cutting one for 'latest' and 'latest-processed'. */
  private async resolve(
    v: VmReplication,
    replica: Replica,
    spec: string,
    deadlineMs: number | undefined,
  ): Promise<RecoveryPoint> {
    const points = replica.points.list();
    if (spec === 'latest' || spec === 'latest-processed') {
      if (spec === 'latest') await this.catchUp(v, deadlineMs ?? this.o.latestDeadlineMs ?? DEFAULT_LATEST_DEADLINE_MS);
      return v.cutPoint('crash');
    }
    if (spec === 'latest-app-consistent') {
      const p = points.filter((x) => x.kind !== 'crash').at(-1);
      if (p === undefined) throw new PointError(PointErrorCode.POINT_NOT_FOUND, `${v.vm} has no app-consistent point`);
      return p;
    }
    if (isPointId(spec)) {
      const p = points.find((x) => x.id === spec);
      if (p !== undefined) return p;
      if (replica.points.isPruned(spec))
        throw new PointError(PointErrorCode.POINT_PRUNED, `point ${spec} of ${v.vm} was pruned by retention`);
      throw new PointError(PointErrorCode.POINT_NOT_FOUND, `${v.vm} has no point ${spec}`);
    }
    const t = Date.parse(spec);
    if (!/^\d{4}-\d\d-\d\dT/.test(spec) || Number.isNaN(t)) {
      throw new SrError(
        ErrorCode.BAD_OPTION,
        `point "${spec}" is not latest, latest-processed, latest-app-consistent, a point id or an ISO time`,
      );
    }
    const p = points.filter((x) => Date.parse(x.time) <= t).at(-1);
    if (p === undefined)
      throw new PointError(PointErrorCode.POINT_NOT_FOUND, `${v.vm} has no point at or before ${spec}`);
    return p;
  }

  /** Waits until everything the cache-store holds is applied, or the deadline passes (the source may be gone). */
  private async catchUp(v: VmReplication, deadlineMs: number): Promise<void> {
    const deadline = Date.now() + deadlineMs;
    while (Date.now() < deadline && this.ctx.cacheStoreConnected()) {
      const target = v.cacheStoreLastLsn;
      if (target === undefined || v.appliedLsn >= target) return;
      await new Promise((r) => setTimeout(r, this.o.latestPollMs ?? DEFAULT_LATEST_POLL_MS));
    }
    if (Date.now() >= deadline)
      this.ctx.log.warn(
        { vm: v.vm, appliedLsn: v.appliedLsn, cacheStoreLastLsn: v.cacheStoreLastLsn },
        "'latest' did not catch up before its deadline; using what is applied",
      );
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

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body ?? {});
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new SrError(ErrorCode.BAD_OPTION, `${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`);
  }
  return r.data;
}

/** `dir` and each ancestor that does not exist yet, outermost first. */
async function missingDirs(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (let d = dir; ; d = path.dirname(d)) {
    try {
      await fsp.access(d);
      return out;
    } catch {
      out.unshift(d);
    }
    if (path.dirname(d) === d) return out;
  }
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

async function dirNames(dir: string): Promise<string[]> {
  try {
    return (await fsp.readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
