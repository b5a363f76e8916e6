import fsp from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { ErrorCode, SrError, checkId } from '@site-recovery/shared';
import { NbdServer, StaticExports, type BlockBackend } from '@site-recovery/shared/nbd';
import {
  DEFAULT_CHECKPOINT_INTERVAL_MS,
  DEFAULT_HEALTH_DISCONNECTED_MS,
  DEFAULT_HEALTH_GROUP_ROUNDS_FAILED,
  type AgentConfig,
} from './agent-config.js';
import { StateStore } from './agent-state.js';
import type { AgentStatus } from './agent-status.js';
import { CaptureBackend, LsnSequence } from './backend/capture-filter.js';
import { BitmapMode } from './bitmap/bitmap-mode.js';
import { DEFAULT_BITMAP_CHUNK_BYTES, DirtyBitmap } from './bitmap/dirty-bitmap.js';
import { FileBackend } from './backend/file-backend.js';
import { Checkpointer } from './checkpointer.js';
import { AgentJournal } from './generation/agent-journal.js';
import { watchContinuity } from './generation/continuity-watch.js';
import { diskFacts, diskStamp } from './generation/disk-identity.js';
import { GenerationCause, type GenerationReason } from './generation/generation-cause.js';
import { generationStatus } from './generation/generation-status.js';
import { GenerationSwitch, type PendingGeneration } from './generation/generation-switch.js';
import { WritePause } from './generation/write-pause.js';
import { checkGroupConfig } from './group/group-config.js';
import { GroupCode } from './group/group-codes.js';
import type { Refusal } from './group/group-member.js';
import { ReplicationGroup } from './group/replication-group.js';
import { WriteGate } from './group/write-gate.js';
import { healthOf, type AgentHealth } from './health.js';
import { AgentReplication } from './replication/agent-replication.js';
import { openDataDir } from './startup.js';

/**
 * Refuses, before anything is created, a token the cache-store would refuse on every dial anyway: one
 * for another VM or role, or one already expired. Found at start, the mistake is one exit away from
 * its fix instead of a retry loop in the log.
 */
export function checkToken(config: Pick<AgentConfig, 'vm' | 'replication'>): void {
  const claims = config.replication?.token?.claims;
  if (claims === undefined) return;
  const fix = `issue one with "sr token issue --secret-file <cache-store secret> --vm ${config.vm} --out FILE"`;
  if (claims.role !== 'agent' || claims.vm !== config.vm) {
    const holds = claims.role === 'agent' ? `VM ${claims.vm}` : `the ${claims.role} role`;
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `the token ${claims.id} is for ${holds}, not for VM ${config.vm}: an agent needs a token for its own VM; ${fix}`,
    );
  }
  if (claims.expiresAt * 1000 <= Date.now()) {
    const at = new Date(claims.expiresAt * 1000).toISOString();
    throw new SrError(ErrorCode.BAD_OPTION, `the token ${claims.id} expired at ${at}; ${fix}`);
  }
}

/**
 * Whether replication lets the VM be cut for a group point now: not while a new generation is on its
 * way or its initial copy runs (the replica is not whole) nor once its stream failed for good (nothing
 * after the cut would arrive).
 */
function replicationRefusal(
  config: AgentConfig,
  pending: PendingGeneration | undefined,
  replication: AgentReplication | undefined,
  mode: BitmapMode | undefined,
): Refusal | undefined {
  if (pending !== undefined)
    return { code: GroupCode.NOT_READY, reason: `a new generation is on its way (${pending.cause})` };
  const dirty = mode?.refusal();
  if (dirty !== undefined) return { code: GroupCode.BITMAP_MODE, reason: dirty };
  if (config.replication === undefined) return undefined;
  if (replication === undefined) return { code: GroupCode.NOT_READY, reason: 'replication is starting' };
  const s = replication.status();
  if (s.initialCopy.state !== 'done')
    return { code: GroupCode.NOT_READY, reason: `the initial copy is at ${s.initialCopy.percent}%` };
  if (s.stream.state === 'failed')
    return { code: GroupCode.NOT_READY, reason: `replication failed: ${s.stream.lastError ?? 'no reason recorded'}` };
  return undefined;
}

/** One protected VM: its disks served over NBD through the capture filter into one journal. */
export class Agent {
  private closing: Promise<void> | undefined;
  /** The running generation's parts (absent while a new one is being cut). */
  private replication: AgentReplication | undefined;
  private group: ReplicationGroup | undefined;
  private mode: BitmapMode | undefined;
  private bitmap: DirtyBitmap | undefined;
  private generationSwitch!: GenerationSwitch;
  private stopWatch: (() => void) | undefined;

  private constructor(
    private readonly config: AgentConfig,
    private readonly images: readonly BlockBackend[],
    private readonly captures: readonly CaptureBackend[],
    private readonly journal: AgentJournal,
    private readonly lsns: LsnSequence,
    private readonly server: NbdServer,
    private readonly checkpointer: Checkpointer,
    private readonly state: StateStore,
    readonly address: AddressInfo,
  ) {}

  static async start(config: AgentConfig): Promise<Agent> {
    checkId('VM name', config.vm);
    if (config.disks.length === 0) throw new SrError(ErrorCode.BAD_OPTION, 'a VM needs at least one --disk ID=PATH');
    const ids = new Set<string>();
    for (const d of config.disks) {
      checkId('disk id', d.id);
      if (ids.has(d.id)) throw new SrError(ErrorCode.BAD_OPTION, `disk id "${d.id}" is given twice`);
      ids.add(d.id);
    }
    checkToken(config);
    if (config.group !== undefined) checkGroupConfig(config.vm, config.group);
    await fsp.mkdir(config.dataDir, { recursive: true });
    const images: BlockBackend[] = [];
    let journal: AgentJournal | undefined;
    let group: ReplicationGroup | undefined;
    let bitmap: DirtyBitmap | undefined;
    let mode: BitmapMode | undefined;
    try {
      for (const d of config.disks) {
        const file = FileBackend.open(d.path);
        images.push(config.imageFilter !== undefined ? config.imageFilter(file) : file);
      }
      // Read once the images are open: the files they are, not whatever the paths name later.
      const facts = await Promise.all(config.disks.map((d) => diskFacts(d.id, d.path)));
      const opened = await openDataDir(config, images, facts);
      // The agent exists only once everything below has started; the journal and the group ask it later.
      const late: { agent?: Agent } = {};
      const lost = (reason: GenerationReason): void => void late.agent?.newGeneration(reason);
      journal = new AgentJournal(opened.journal, {
        onDamage: (err) => lost({ cause: GenerationCause.JOURNAL_DAMAGED, message: err.message }),
        onFailure: (err) => lost({ cause: GenerationCause.JOURNAL_FAILED, message: err.message }),
      });
      const lsns = new LsnSequence(journal.lastLsn);
      // One gate for all the VM's disks, as they share one LSN sequence; none without a group, so that
      // the capture path costs one comparison more.
      const gate = config.group !== undefined ? new WriteGate() : undefined;
      const rep = opened.state.replication;
      if (rep !== undefined) {
        // A generation to resync into: past the cap, writes are tracked in the bitmap rather than wait.
        const chunkBytes = config.bitmap?.chunkBytes ?? DEFAULT_BITMAP_CHUNK_BYTES;
        const disks = images.map((i) => i.size);
        bitmap = await DirtyBitmap.open(
          config.dataDir,
          { generation: rep.generation, chunkBytes, disks },
          opened.bitmap,
        );
        const { resumeBelowBytes, pollMs, resync } = config.bitmap ?? {};
        mode = new BitmapMode({
          journal,
          lsns,
          bitmap,
          log: config.log,
          ...(resumeBelowBytes !== undefined ? { resumeBelowBytes } : {}),
          ...(pollMs !== undefined ? { pollMs } : {}),
          ...(resync !== undefined ? { resync } : {}),
          onEnter: (reason) => group?.abandon(GroupCode.BITMAP_MODE, reason),
        });
        mode.resume(); // before the VM can write: its marker goes first
      }
      const captures = images.map(
        (image, disk) =>
          new CaptureBackend(image, {
            disk,
            lsns,
            journal: journal!,
            // Redo synced the images through the journal's end.
            syncedThroughLsn: opened.journal.lastLsn,
            ...(gate !== undefined ? { gate } : {}),
            ...(mode !== undefined ? { mode } : {}),
            onImageFailure: (f) =>
              config.log.error(
                { disk: config.disks[disk]!.id, op: f.op, lsn: f.lsn, err: f.error },
                f.op === 'write'
                  ? 'image write failed after its record was journaled; the disk refuses writes until the agent is restarted (the restart replays the record)'
                  : 'image fdatasync failed; the disk refuses writes and flushes and the checkpoint stays below this LSN until the agent is restarted (the restart replays the journal from it)',
              ),
          }),
      );
      mode?.start(captures);
      if (config.group !== undefined) {
        // Before the NBD listener: a member that cannot join fails the start before the VM writes.
        group = await ReplicationGroup.start({
          vm: config.vm,
          config: config.group,
          dataDir: config.dataDir,
          journal,
          lsns,
          gate: gate!,
          canCut: () =>
            replicationRefusal(config, late.agent?.generationSwitch.status(), late.agent?.replication, mode),
          log: config.log,
        });
      }
      const pause = new WritePause();
      const server = new NbdServer({
        exports: new StaticExports(
          config.disks.map((d, i) => ({
            name: d.id,
            description: `${config.vm} disk ${d.id}`,
            readOnly: false,
            backend: pause.filter(captures[i]!),
          })),
        ),
        log: config.log,
        limits: config.nbdLimits ?? {},
      });
      const address = await server.listen(config.nbdHost, config.nbdPort);
      const state = new StateStore(config.dataDir, opened.state);
      const checkpointer = new Checkpointer({
        dataDir: config.dataDir,
        journal,
        captures,
        lsns,
        startLsn: opened.checkpoint,
        intervalMs: config.checkpointIntervalMs ?? DEFAULT_CHECKPOINT_INTERVAL_MS,
        // No generation to ship a backlog to: see AgentConfig.replication.
        keepsNoBacklog: config.replication === undefined && state.state.replication === undefined,
        stamps: () => Promise.all(config.disks.map((d) => diskStamp(d.path))),
        log: config.log,
      });
      const agent = new Agent(config, images, captures, journal, lsns, server, checkpointer, state, address);
      agent.group = group;
      agent.mode = mode;
      agent.bitmap = bitmap;
      agent.generationSwitch = new GenerationSwitch({
        dataDir: config.dataDir,
        journalOptions: config.journal,
        journal,
        lsns,
        captures,
        pause,
        gate,
        state,
        checkpointer,
        replicating: config.replication !== undefined,
        stopReplication: () => agent.stopReplication(),
        startReplication: () => agent.startReplication(),
        ...(config.generationRetry !== undefined ? { retry: config.generationRetry } : {}),
        log: config.log,
      });
      late.agent = agent;
      checkpointer.start();
      if (config.replication !== undefined) {
        agent.startReplication();
        agent.stopWatch = watchContinuity(
          () => agent.replication?.status().stream,
          (reason) => void agent.newGeneration(reason),
        );
      }
      config.log.info(
        { vm: config.vm, nbd: `${address.address}:${address.port}`, lsn: journal.lastLsn },
        'agent started',
      );
      return agent;
    } catch (err) {
      await group?.close().catch(() => undefined);
      await mode?.stop().catch(() => undefined);
      await journal?.close().catch(() => undefined);
      await bitmap?.close().catch(() => undefined);
      await Promise.all(images.map((i) => i.close().catch(() => undefined)));
      throw err;
    }
  }

  /**
   * Begins a new replication generation while the VM goes on writing, for `reason` (logged, and shown
   * in the status): what the agent does by itself when continuity is lost at run time, and what a part
   * that finds it lost calls (a bitmap that cannot be trusted, say). Without a cache-store the
   * generation is forgotten and the journal starts over. Resolves once the generation has begun, or
   * the agent stops; a failed attempt is retried (see GenerationSwitch). Calls while one is on its way
   * join it.
   */
  newGeneration(reason: GenerationReason): Promise<void> {
    if (this.closing !== undefined) return Promise.resolve();
    return this.generationSwitch.request(reason);
  }

  /** Starts the parts of the generation the state holds. */
  private startReplication(): void {
    const r = this.config.replication;
    const generation = this.state.state.replication?.generation;
    if (r === undefined || generation === undefined) return;
    const group = this.group;
    this.replication = new AgentReplication({
      config: r,
      vm: this.config.vm,
      state: this.state.forGeneration(generation),
      journal: this.journal,
      lsns: this.lsns,
      captures: this.captures,
      dataDir: this.config.dataDir,
      log: this.config.log,
      onAcked: (lsn) => this.checkpointer.acked(lsn),
      pointRefusal: () => this.mode?.refusal(),
      ...(this.config.group !== undefined
        ? { group: this.config.group.name, onMultiVmFrequency: (ms) => group?.setFrequency(ms) }
        : {}),
    });
    this.replication.start();
  }

  /** Stops the running generation's parts. */
  private async stopReplication(): Promise<void> {
    const r = this.replication;
    this.replication = undefined;
    await r?.stop();
  }

  status(): AgentStatus {
    const journal = this.journal.stats();
    const imageFailures = this.captures.flatMap((c, i) => {
      const f = c.failure();
      return f === undefined ? [] : [{ disk: this.config.disks[i]!.id, ...f }];
    });
    return {
      vm: this.config.vm,
      nbd: `${this.address.address}:${this.address.port}`,
      lsn: this.lsns.current,
      checkpointLsn: this.checkpointer.lsn,
      journal,
      connections: this.server.connectionCount,
      refusedConnections: this.server.refusedConnections,
      stalledWrites: this.captures.reduce((n, c) => n + c.stalledWrites, 0),
      ...(this.mode !== undefined ? { mode: this.mode.status() } : {}),
      ...(this.replication !== undefined ? { replication: this.replication.status() } : {}),
      ...(this.generationShown()
        ? { generation: generationStatus(this.state.state, this.generationSwitch.status()) }
        : {}),
      ...(this.group !== undefined ? { group: this.group.status() } : {}),
      ...(imageFailures.length > 0 ? { imageFailures } : {}),
      // Only an agent without a generation (no bitmap mode) holds the VM's writes at the cap, until its
      // checkpoint lets the oldest segments go; with one, only copies wait there.
      ...(journal.stalled && this.mode === undefined
        ? {
            stalled: `journal at its cap of ${journal.maxBytes} bytes: VM writes wait until a checkpoint lets the oldest segments go`,
          }
        : {}),
    };
  }

  /** An agent that never replicated and has nothing pending has no generation to show. */
  private generationShown(): boolean {
    const s = this.state.state;
    return (
      s.replication !== undefined ||
      s.generations !== undefined ||
      s.pendingGeneration !== undefined ||
      this.generationSwitch.switching
    );
  }

  /** Whether the agent protects the VM as it should; see {@link healthOf}. */
  health(): AgentHealth {
    return healthOf(this.status(), {
      disconnectedMs: this.config.health?.disconnectedMs ?? DEFAULT_HEALTH_DISCONNECTED_MS,
      groupRoundsFailed: this.config.health?.groupRoundsFailed ?? DEFAULT_HEALTH_GROUP_ROUNDS_FAILED,
    });
  }

  /**
   * Takes a checkpoint now, as the interval does; resolves to the LSN the checkpoint stands at.
   * Rejects when the journal or an image cannot be synced (the checkpoint then stays where it was).
   */
  checkpoint(): Promise<number> {
    return this.checkpointer.checkpoint();
  }

  /**
   * Stops serving and replicating, then writes the last checkpoint and closes the files. Rejects
   * (after closing everything) when that checkpoint could not be written: the next start replays
   * the journal from the previous one.
   */
  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  private async shutDown(): Promise<void> {
    // A generation being cut finishes first (it holds the VM's writes for a moment at most).
    this.stopWatch?.();
    await this.generationSwitch.close();
    // The group first: its hold ends (journaled as an abort) and the replies it held are answered. The
    // NBD connections send replies from a setImmediate, so one turn lets them out before they close.
    if (this.group !== undefined) {
      await this.group.close();
      await new Promise((resolve) => setImmediate(resolve));
    }
    // The initial copy learns it is stopping first, so that the end of its wait at the journal's cap (or
    // in bitmap mode) is a stop, not a failed attempt. Then writers stalled at the cap would otherwise
    // hold up everything below.
    const replicationStopped = this.stopReplication();
    this.journal.stopWaiting();
    await this.server.close();
    await this.mode?.stop();
    await replicationStopped;
    // Writes already journaled may still be on their way to the images: the last checkpoint says every
    // record up to it is in them, so it must wait for those writes.
    await Promise.all(this.captures.map((c) => c.drained()));
    let unclean: Error | undefined;
    try {
      await this.checkpointer.close();
    } catch (err) {
      unclean = err as Error;
      this.config.log.error({ err: (err as Error).message }, 'stopping without a last checkpoint');
    }
    await this.journal.close();
    await this.bitmap?.close();
    await Promise.all(this.images.map((i) => i.close()));
    if (unclean !== undefined) throw unclean;
    this.config.log.info({ vm: this.config.vm, lsn: this.journal.lastLsn }, 'agent stopped');
  }
}
