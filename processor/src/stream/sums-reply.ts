import {
  BLOCK_SUM_ALGO,
  BLOCK_SUM_BYTES,
  blockSums,
  type Logger,
  type Sums,
  type SumsEnd,
  type SumsRequest,
} from '@site-recovery/shared';
import type { VmReplication } from './vm-replication.js';

export interface SumsOptions {
  /**
   * Bytes of replica read per hold of the VM's applying queue while its sums are served: how long an
   * answer holds applying up at a time (a 4 MiB read), however large the disk. Rounded down to whole
   * blocks (at least one). Default 4 MiB.
   */
  readonly sumsSliceBytes?: number;
  /**
   * Bytes of sums per `sums` message (16 per block), at most 4 MiB (the protocol's limit): what an
   * answer holds in memory at a time. Default 1 MiB.
   */
  readonly sumsMessageBytes?: number;
}

export const DEFAULT_SUMS_SLICE_BYTES = 4 << 20;
export const DEFAULT_SUMS_MESSAGE_BYTES = 1 << 20;
/** The protocol's largest `sums` message, in bytes of sums. */
export const MAX_SUMS_MESSAGE_BYTES = 4 << 20;

/** Where an answer goes: the connection the request came on. */
export interface SumsLink {
  /** Resolves once the message is written out (false: the connection is gone), so sums never pile up in memory. */
  send(message: Sums | SumsEnd): Promise<boolean>;
}

/**
 * The sums requests of one connection to the cache-store. A request is answered once the VM's stream
 * of its generation has begun (until then the latest one per VM waits); one answer per VM runs at a
 * time, a newer request replacing it. Closing the connection ends every answer: the agent asks again.
 */
export class SumsReplies {
  private readonly waiting = new Map<string, SumsRequest>();
  private readonly running = new Map<string, { cancelled: boolean }>();

  constructor(
    private readonly link: SumsLink,
    private readonly log: Logger,
    private readonly o: SumsOptions = {},
  ) {}

  /** `streaming`: the generation whose stream of the VM began on this connection, if any. */
  requested(m: SumsRequest, vm: VmReplication | undefined, streaming: string | undefined): void {
    this.cancel(m.vm);
    if (vm !== undefined && streaming === m.generation) this.start(vm, m);
    else this.waiting.set(m.vm, m);
  }

  /** The VM's stream of `generation` began on this connection: a request waiting for it is answered. */
  streamBegan(vm: VmReplication, generation: string): void {
    const m = this.waiting.get(vm.vm);
    if (m === undefined || m.generation !== generation) return;
    this.waiting.delete(vm.vm);
    this.start(vm, m);
  }

  close(): void {
    this.waiting.clear();
    for (const vm of [...this.running.keys()]) this.cancel(vm);
  }

  private cancel(vm: string): void {
    this.waiting.delete(vm);
    const token = this.running.get(vm);
    if (token !== undefined) token.cancelled = true;
    this.running.delete(vm);
  }

  private start(vm: VmReplication, m: SumsRequest): void {
    const token = { cancelled: false };
    this.running.set(vm.vm, token);
    answerSums(vm, m, this.link, () => token.cancelled, this.o)
      .then((outcome) =>
        this.log.info(
          { vm: vm.vm, generation: m.generation, blockBytes: m.blockBytes, outcome },
          'sums request answered',
        ),
      )
      .catch((err: unknown) =>
        this.log.warn({ vm: vm.vm, generation: m.generation, err: (err as Error).message }, 'sums answer failed'),
      )
      .finally(() => {
        if (this.running.get(vm.vm) === token) this.running.delete(vm.vm);
      });
  }
}

/**
 * Answers one request: `sums` messages disk by disk, blocks in order, then `sums-end {available: true}`;
 * or at once `sums-end {available: false, reason}` when the replica is no base for the generation
 * (generation-gate.ts) or sums with another function. Each slice is read between two applied records
 * (`readBetweenRecords`), so every block's sum is of the replica after some prefix of the stream —
 * what the agent's comparison relies on — while applying goes on between slices: taking all sums
 * before applying anything of the generation would stop a large disk's stream for the whole read.
 * Returns how it ended.
 */
export async function answerSums(
  vm: VmReplication,
  m: SumsRequest,
  link: SumsLink,
  cancelled: () => boolean,
  o: SumsOptions = {},
): Promise<'sent' | 'unavailable' | 'abandoned'> {
  const { generation, blockBytes } = m;
  const end = async (available: boolean, reason?: string): Promise<boolean> =>
    link.send({
      t: 'sums-end',
      vm: vm.vm,
      generation,
      blockBytes,
      available,
      ...(reason !== undefined ? { reason: reason.slice(0, 256) } : {}),
    });
  if (m.algo !== BLOCK_SUM_ALGO) {
    await end(false, `the processor sums blocks with ${BLOCK_SUM_ALGO}, not ${m.algo}`);
    return 'unavailable';
  }
  const base = vm.sumsBase(generation);
  const disks = vm.current?.info().disks;
  if (!base.available || disks === undefined) {
    await end(false, base.available ? 'no replica' : base.reason);
    return 'unavailable';
  }
  const slice = Math.max(1, Math.floor((o.sumsSliceBytes ?? DEFAULT_SUMS_SLICE_BYTES) / blockBytes)) * blockBytes;
  const perMessage =
    Math.max(
      1,
      Math.floor(Math.min(o.sumsMessageBytes ?? DEFAULT_SUMS_MESSAGE_BYTES, MAX_SUMS_MESSAGE_BYTES) / BLOCK_SUM_BYTES),
    ) * BLOCK_SUM_BYTES;
  for (let disk = 0; disk < disks.length; disk++) {
    const size = disks[disk]!.size;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let first = 0;
    const send = async (sums: Buffer): Promise<boolean> => {
      const ok = await link.send({ t: 'sums', vm: vm.vm, generation, disk, first, blockBytes, sums });
      first += sums.length / BLOCK_SUM_BYTES;
      return ok;
    };
    for (let at = 0; at < size; at += slice) {
      if (cancelled()) return 'abandoned';
      const data = await vm.readBetweenRecords(generation, disk, at, Math.min(slice, size - at));
      // Another generation began (its agent is gone), or the VM was refused meanwhile.
      if (data === undefined) return 'abandoned';
      pending.push(blockSums(data, blockBytes));
      pendingBytes += pending.at(-1)!.length;
      if (pendingBytes < perMessage) continue;
      let all = Buffer.concat(pending);
      for (; all.length >= perMessage; all = all.subarray(perMessage))
        if (!(await send(all.subarray(0, perMessage)))) return 'abandoned';
      pending = all.length > 0 ? [Buffer.from(all)] : [];
      pendingBytes = all.length;
    }
    if (pendingBytes > 0 && !(await send(Buffer.concat(pending)))) return 'abandoned';
  }
  if (cancelled() || !(await end(true))) return 'abandoned';
  return 'sent';
}
