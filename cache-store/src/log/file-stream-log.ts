import {
  DEFAULT_WIRE_LIMITS,
  ErrorCode,
  SerialQueue,
  SrError,
  closeFd,
  fdatasync,
  pwritev,
  type DiskInfo,
  type Logger,
  type SourceMode,
} from '@site-recovery/shared';
import type { Segment } from './segment.js';
import { encodeFrameHeader } from './segment-format.js';
import { SegmentList } from './segment-list.js';
import { readSegmentFrames } from './segment-reader.js';
import { createSegment, loadSegments } from './segment-scan.js';
import { checkRoomFor, ftruncateFd, storageError } from './storage-errors.js';
import type { SpaceReserve } from './space-reserve.js';
import {
  DEFAULT_READ_CHUNK_BYTES,
  DEFAULT_SEGMENT_BYTES,
  type FileStreamLogOptions,
} from './file-stream-log-options.js';
import type { StoredFrame, StreamLog, StreamLogStats, StreamLogWatcher } from './stream-log.js';
import { recordVmMeta, type VmMeta } from './vm-meta.js';

export { DEFAULT_READ_CHUNK_BYTES, DEFAULT_SEGMENT_BYTES } from './file-stream-log-options.js';
export type { FileStreamLogOptions } from './file-stream-log-options.js';

/** Most buffers one vectored write takes (IOV_MAX on Linux). */
const IOV_MAX = 1024;

interface SyncWaiter {
  readonly target: number;
  readonly resolve: (lsn: number) => void;
  readonly reject: (err: Error) => void;
}

/**
 * {@link StreamLog} in append-only segment files of one VM directory (layout: segment-format.ts).
 * One writer takes everything appended since its last round, writes it with vectored writes and
 * covers it with one fdatasync (group commit). Only the newest segment ever holds frames that are
 * not durable: a segment is fsynced before the next one is begun.
 */
export class FileStreamLog implements StreamLog {
  private readonly segmentBytes: number;
  private readonly maxFrameBytes: number;
  private readonly readChunkBytes: number;
  private readonly log: Logger | undefined;
  private readonly reserve: SpaceReserve | undefined;

  private readonly watchers = new Set<StreamLogWatcher>();
  /** Appended, waiting for the writer. */
  private queue: StoredFrame[] = [];
  /** Written and indexed, waiting for the fdatasync that makes them durable. */
  private written: StoredFrame[] = [];
  private syncWaiters: SyncWaiter[] = [];
  private idleWaiters: (() => void)[] = [];
  private writerRunning = false;
  private failure: SrError | undefined;
  private closed = false;
  private appended: number;
  private durable: number;
  private applied: number;
  private pending = 0;
  private releaseQueued: Promise<void> | undefined;
  /** Meta writes and segment deletions, one at a time. */
  private readonly releases = new SerialQueue();
  private readonly segments: SegmentList;

  private constructor(
    private readonly dir: string,
    private meta: VmMeta,
    segments: Segment[],
    private fd: number,
    options: FileStreamLogOptions,
  ) {
    this.segmentBytes = options.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULT_WIRE_LIMITS.maxFrameBytes;
    this.readChunkBytes = options.readChunkBytes ?? DEFAULT_READ_CHUNK_BYTES;
    this.log = options.log;
    this.reserve = options.reserve;

    this.segments = new SegmentList(dir, segments);
    this.appended = this.durable = this.segments.newest.lastLsn;
    this.applied = meta.appliedLsn;
  }

  /**
   * Opens the log of the VM directory `dir`, whose meta file says `meta` (see {@link loadSegments}
   * for what opening checks and repairs).
   */
  static async open(dir: string, meta: VmMeta, options: FileStreamLogOptions = {}): Promise<FileStreamLog> {
    const { segments, fd } = await loadSegments(
      dir,
      meta,
      options.maxFrameBytes ?? DEFAULT_WIRE_LIMITS.maxFrameBytes,
      options.log,
    );
    const log = new FileStreamLog(dir, meta, segments, fd, options);
    try {
      await log.segments.drop(meta.appliedLsn, meta.vm); // a crash between recording a release and deleting
    } catch (err) {
      await closeFd(fd).catch(() => undefined);
      throw err;
    }
    return log;
  }

  get vm(): string {
    return this.meta.vm;
  }

  get generation(): string {
    return this.meta.generation;
  }

  get disks(): readonly DiskInfo[] {
    return this.meta.disks;
  }

  get group(): string | undefined {
    return this.meta.group;
  }

  get mode(): SourceMode | undefined {
    return this.meta.mode;
  }

  get firstLsn(): number {
    return this.segments.oldest.firstLsn;
  }

  get appendedLsn(): number {
    return this.appended;
  }

  get durableLsn(): number {
    return this.durable;
  }

  get appliedLsn(): number {
    return this.applied;
  }

  get pendingBytes(): number {
    return this.pending;
  }

  append(f: StoredFrame): void {
    if (this.closed) throw new SrError(ErrorCode.SHUTTING_DOWN, `stream log of ${this.vm} is closed`);
    if (this.failure !== undefined) throw this.failure;
    if (f.first !== this.appended + 1) {
      throw new SrError(
        ErrorCode.SEQUENCE,
        `${this.vm}: frame starts at LSN ${f.first}, the next one expected is ${this.appended + 1}`,
      );
    }
    if (f.last < f.first || f.last - f.first >= 0xffff_ffff)
      throw new SrError(ErrorCode.PROTOCOL, `${this.vm}: frame LSNs ${f.first}..${f.last} are not a valid range`);
    if (f.frame.length > this.maxFrameBytes)
      throw new SrError(ErrorCode.LIMIT, `${this.vm}: frame of ${f.frame.length} bytes exceeds ${this.maxFrameBytes}`);
    this.queue.push(f);
    this.appended = f.last;
    this.pending += f.frame.length;
    if (!this.writerRunning) {
      this.writerRunning = true;
      // Waiting for the next turn of the event loop lets every frame that arrived in this one join.
      setImmediate(() => void this.writer());
    }
  }

  /** The single writer: rounds of write-everything-queued then one fdatasync, until nothing is queued. */
  private async writer(): Promise<void> {
    try {
      while (this.queue.length > 0 && this.failure === undefined) {
        const group = this.queue;
        this.queue = [];
        await this.writeGroup(group);
        await fdatasync(this.fd);
        this.madeDurable();
      }
    } catch (err) {
      this.fail(err);
    }
    this.writerRunning = false;
    const idle = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of idle) w();
  }

  private async writeGroup(group: readonly StoredFrame[]): Promise<void> {
    let i = 0;
    while (i < group.length) {
      let seg = this.segments.newest;
      if (seg.bytes >= this.segmentBytes && seg.frames > 0) seg = await this.roll();
      const start = seg.bytes;
      const bufs: Buffer[] = [];
      const run: { f: StoredFrame; at: number; bytes: number }[] = [];
      let at = start;
      // A segment may end up to one frame past segmentBytes: frames are never split.
      while (i < group.length && (run.length === 0 || at < this.segmentBytes)) {
        const f = group[i++]!;
        const h = encodeFrameHeader(f.first, f.last - f.first + 1, f.frame);
        bufs.push(h, f.frame);
        run.push({ f, at, bytes: h.length + f.frame.length });
        at += h.length + f.frame.length;
      }
      for (let b = 0, pos = start; b < bufs.length; b += IOV_MAX) {
        const part = bufs.length <= IOV_MAX ? bufs : bufs.slice(b, b + IOV_MAX);
        await pwritev(this.fd, part, pos);
        pos += part.reduce((n, x) => n + x.length, 0);
      }
      for (const r of run) {
        seg.add(r.f.first, r.f.last, r.at, r.bytes);
        this.written.push(r.f);
      }
    }
  }

  /** Makes the full segment durable, then begins the next; a crash in between leaves no gap. */
  private async roll(): Promise<Segment> {
    const old = this.segments.newest;
    await fdatasync(this.fd);
    this.madeDurable();
    const next = await createSegment(this.dir, old.lastLsn + 1, this.generation);
    const oldFd = this.fd;
    this.fd = next.fd;
    this.segments.push(next.segment);
    await closeFd(oldFd);
    return next.segment;
  }

  private madeDurable(): void {
    const frames = this.written;
    if (frames.length === 0) return;
    this.written = [];
    this.durable = frames[frames.length - 1]!.last;
    for (const f of frames) this.pending -= f.frame.length;
    for (const w of this.watchers) this.tell(() => w.durable(frames, this.durable));
    const keep: SyncWaiter[] = [];
    for (const s of this.syncWaiters) {
      if (s.target <= this.durable) s.resolve(this.durable);
      else keep.push(s);
    }
    this.syncWaiters = keep;
  }

  private fail(err: unknown): void {
    if (this.failure !== undefined) return;
    this.failure = storageError(
      err,
      `stream log of ${this.vm} in ${this.dir} failed; it takes appends again once resumed`,
    );
    this.queue = [];
    const failure = this.failure;
    for (const w of this.watchers) this.tell(() => w.failed(failure));
    const waiters = this.syncWaiters;
    this.syncWaiters = [];
    for (const s of waiters) s.reject(this.failure);
  }

  /** A watcher that throws must not pass for a storage failure of the writer that called it. */
  private tell(call: () => void): void {
    try {
      call();
    } catch (err) {
      this.log?.error({ vm: this.vm, err }, 'stream log watcher failed');
    }
  }

  sync(): Promise<number> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.durable >= this.appended) return Promise.resolve(this.durable);
    return new Promise((resolve, reject) => this.syncWaiters.push({ target: this.appended, resolve, reject }));
  }

  private idle(): Promise<void> {
    if (!this.writerRunning) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  async resume(): Promise<number> {
    if (this.closed) throw new SrError(ErrorCode.SHUTTING_DOWN, `stream log of ${this.vm} is closed`);
    if (this.failure === undefined) return this.sync();
    await this.idle();
    const seg = this.segments.newest;
    try {
      await ftruncateFd(this.fd, seg.truncateAfter(this.durable));
      await fdatasync(this.fd);
    } catch (err) {
      throw storageError(err, `stream log of ${this.vm}: cannot cut off what never became durable`);
    }
    this.written = [];
    this.queue = [];
    this.pending = 0;
    this.appended = this.durable;
    // Refused here, at the agent's hello, until a whole segment fits again: frames sent into a disk that
    // is still full would only fail again.
    if (this.failure.code === ErrorCode.NO_SPACE)
      await checkRoomFor(this.dir, this.segmentBytes, this.vm, this.durable);
    this.failure = undefined;
    return this.durable;
  }

  async *read(from: number): AsyncGenerator<StoredFrame> {
    if (from < this.firstLsn) {
      throw new SrError(
        ErrorCode.SEQUENCE,
        `${this.vm}: LSN ${from} is not held (released up to ${this.applied}; first held is ${this.firstLsn})`,
      );
    }
    let next = from;
    while (next <= this.durable) {
      if (this.closed) throw new SrError(ErrorCode.SHUTTING_DOWN, `stream log of ${this.vm} is closed`);
      const seg = this.segments.holding(next);
      if (seg === undefined) {
        throw new SrError(
          ErrorCode.SEQUENCE,
          `${this.vm}: LSN ${next} is no longer held (released up to ${this.applied}; first held is ${this.firstLsn})`,
        );
      }
      let got = false;
      for await (const f of readSegmentFrames(seg, next, () => this.durable, this.readChunkBytes, this.maxFrameBytes)) {
        got = true;
        yield f;
        next = f.last + 1;
      }
      if (!got) break; // nothing durable left in the segment holding `next`
    }
  }

  release(lsn: number): Promise<void> {
    if (lsn > this.durable)
      return Promise.reject(
        new SrError(
          ErrorCode.SEQUENCE,
          `${this.vm}: cannot release up to LSN ${lsn}, durable only up to ${this.durable}`,
        ),
      );
    if (lsn <= this.applied) return this.releaseQueued ?? this.releases.idle();
    this.applied = lsn;
    // Releases that arrive while one is being written fold into the next: one meta write each.
    if (this.releaseQueued !== undefined) return this.releaseQueued;
    const run = this.releases.run(async () => {
      this.releaseQueued = undefined;
      const applied = this.applied;
      await recordVmMeta(
        this.dir,
        { ...this.meta, appliedLsn: applied },
        this.reserve,
        'cannot record the applied LSN',
      );
      await this.segments.drop(applied, this.vm);
      await this.reserve?.refill(); // space may have come back with the segments
    });
    this.releaseQueued = run;
    return run;
  }

  setGroup(group: string | undefined): Promise<void> {
    return this.setMetaField('group', group, 'its replication group');
  }

  setMode(mode: SourceMode | undefined): Promise<void> {
    return this.setMetaField('mode', mode, "its agent's mode");
  }

  private setMetaField<K extends 'group' | 'mode'>(key: K, value: VmMeta[K], what: string): Promise<void> {
    if (value === this.meta[key]) return this.releases.idle();
    const meta: Partial<VmMeta> = { ...this.meta };
    delete meta[key];
    this.meta = { ...(meta as VmMeta), ...(value !== undefined ? { [key]: value } : {}) };
    // In the same queue as the release's meta writes, so none overwrites another's field.
    return this.releases.run(() =>
      recordVmMeta(this.dir, { ...this.meta, appliedLsn: this.applied }, this.reserve, `cannot record ${what}`),
    );
  }

  watch(watcher: StreamLogWatcher): () => void {
    this.watchers.add(watcher);
    return () => this.watchers.delete(watcher);
  }

  stats(): StreamLogStats {
    return {
      vm: this.vm,
      generation: this.generation,
      disks: this.disks,
      firstLsn: this.firstLsn,
      durableLsn: this.durable,
      appliedLsn: this.applied,
      segments: this.segments.count,
      bytes: this.segments.bytes,
      failed: this.failure?.message,
      failedCode: this.failure?.code,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.idle();
    await this.releases.idle();
    this.watchers.clear();
    const waiters = this.syncWaiters;
    this.syncWaiters = [];
    for (const s of waiters)
      s.reject(this.failure ?? new SrError(ErrorCode.SHUTTING_DOWN, `stream log of ${this.vm} is closed`));
    await closeFd(this.fd);
  }
}
