import fsp from 'node:fs/promises';
import WebSocket from 'ws';
import {
  BLOCK_SUM_BYTES,
  BatchSchema,
  DEFAULT_WIRE_LIMITS,
  MessageSchema,
  PROTOCOL_VERSION,
  blockSums,
  decodeBatch,
  decodeMessage,
  encodeMessage,
  type ChangeRecord,
  type DiskInfo,
  type SumsRequest,
} from '@site-recovery/shared';
import { applyRecord } from '../../src/backend/apply-record.js';
import { FileBackend } from '../../src/backend/file-backend.js';

/**
 * A processor stand-in on a real cache-store, for one VM with one disk: it subscribes to every
 * generation the cache-store lists, applies each batch to a replica image (never wiping it), and
 * answers a sums request with the replica's sums taken between two batches (or `available: false`
 * while `hasReplica` is false). The real processor does this in processor/; this one lets the agent's
 * side be tested through the real cache-store on its own.
 */
export class ReplicaPeer {
  /** Records applied, per generation, in order (payloads dropped). */
  readonly applied = new Map<string, Omit<ChangeRecord, 'data'>[]>();
  readonly requests: SumsRequest[] = [];
  /** Answer with the replica's sums (else `available: false`, as for a replica not yet made). */
  hasReplica = false;
  private readonly subscribed = new Set<string>();
  private disks: readonly DiskInfo[] = [];
  private chain: Promise<void> = Promise.resolve();
  private failure: Error | undefined;

  private constructor(
    private readonly ws: WebSocket,
    private readonly vm: string,
    private readonly replica: string,
  ) {
    ws.on('message', (data: Buffer) => {
      this.chain = this.chain.then(() => this.receive(data)).catch((err: Error) => void (this.failure ??= err));
    });
  }

  static async connect(url: string, vm: string, replica: string): Promise<ReplicaPeer> {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: DEFAULT_WIRE_LIMITS.maxFrameBytes });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const peer = new ReplicaPeer(ws, vm, replica);
    ws.send(encodeMessage({ t: 'hello', v: PROTOCOL_VERSION, role: 'processor' }));
    return peer;
  }

  /** Throws what went wrong in a message handler, if anything did. */
  check(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  close(): void {
    this.ws.close();
  }

  private async receive(frame: Buffer): Promise<void> {
    const m = decodeMessage(frame, MessageSchema);
    switch (m.t) {
      case 'vms':
        for (const v of m.vms) {
          if (v.vm !== this.vm || this.subscribed.has(v.generation)) continue;
          this.subscribed.add(v.generation);
          this.send({ t: 'subscribe', vm: v.vm, generation: null, from: 1 });
        }
        return;
      case 'stream':
        this.disks = m.disks;
        this.applied.set(m.generation, []);
        return;
      case 'batch':
        return this.apply(decodeMessage(frame, BatchSchema));
      case 'sums-request':
        this.requests.push(m);
        return this.answer(m);
      default:
        return;
    }
  }

  private async apply(b: ReturnType<typeof BatchSchema.parse>): Promise<void> {
    const records = decodeBatch(b, this.disks, DEFAULT_WIRE_LIMITS);
    const log = this.applied.get(b.generation)!;
    const replica = FileBackend.open(this.replica);
    try {
      for (const r of records) {
        if (r.lsn <= (log.at(-1)?.lsn ?? 0)) continue; // sent again after a reconnection
        await applyRecord(replica, r);
        log.push({ lsn: r.lsn, kind: r.kind, disk: r.disk, offset: r.offset, length: r.length });
      }
    } finally {
      await replica.close();
    }
    this.send({ t: 'applied', vm: b.vm, generation: b.generation, lsn: log.at(-1)?.lsn ?? 0 });
  }

  private async answer(r: SumsRequest): Promise<void> {
    const end = { t: 'sums-end', vm: r.vm, generation: r.generation, blockBytes: r.blockBytes };
    if (!this.hasReplica) return this.send({ ...end, available: false, reason: 'no replica yet' });
    const sums = blockSums(await fsp.readFile(this.replica), r.blockBytes);
    const per = 4096;
    for (let first = 0; first * BLOCK_SUM_BYTES < sums.length; first += per) {
      const part = sums.subarray(first * BLOCK_SUM_BYTES, (first + per) * BLOCK_SUM_BYTES);
      this.send({
        t: 'sums',
        vm: r.vm,
        generation: r.generation,
        disk: 0,
        first,
        blockBytes: r.blockBytes,
        sums: part,
      });
    }
    this.send({ ...end, available: true });
  }

  private send(m: object): void {
    this.ws.send(encodeMessage(m));
  }
}
