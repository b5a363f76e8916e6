import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  BLOCK_SUM_BYTES,
  RecordKind,
  blockSums,
  createLogger,
  type ChangeRecord,
  type SumsRequest,
} from '@site-recovery/shared';
import { applyRecord } from '../../src/backend/apply-record.js';
import { CaptureBackend, LsnSequence } from '../../src/backend/capture-filter.js';
import { FileBackend } from '../../src/backend/file-backend.js';
import { FileJournal } from '../../src/journal/file-journal.js';
import { InitialSync } from '../../src/replication/initial-copy.js';
import { SumsExchange, type SumsOptions } from '../../src/replication/sums-exchange.js';

export const BLOCK = 4096;
const log = createLogger('diff-copy', process.env['SR_LOG_LEVEL'] ?? 'silent');

/**
 * The agent's side of a copy by difference on real files: a source image behind a capture filter
 * writing to a real journal, and a replica image standing for the processor's, which the test
 * answers sums requests from and replays the journal onto.
 */
export class DiffRig {
  readonly requests: SumsRequest[] = [];
  /** The progress the copy persisted, last first. */
  readonly progress: { copied: number; complete: boolean }[] = [];
  /** Journal records already replayed onto the replica (the processor's applied LSN). */
  applied = 0;
  onRequest: ((r: SumsRequest) => void) | undefined;

  private constructor(
    readonly dir: string,
    readonly source: string,
    readonly replica: string,
    readonly image: FileBackend,
    readonly journal: FileJournal,
    readonly lsns: LsnSequence,
    readonly capture: CaptureBackend,
  ) {}

  /** `source` and `replica` must exist with the same size. */
  static async open(dir: string, source: string, replica: string): Promise<DiffRig> {
    const image = FileBackend.open(source);
    const journal = await FileJournal.open(path.join(dir, 'journal'));
    const lsns = new LsnSequence(journal.lastLsn);
    const capture = new CaptureBackend(image, { disk: 0, lsns, journal });
    return new DiffRig(dir, source, replica, image, journal, lsns, capture);
  }

  /** A copy from `startAt`, asking for sums through a new exchange (as a restarted agent does). */
  copy(o: { startAt?: number; sums?: Partial<SumsOptions>; markEveryBytes?: number; parallel?: number } = {}): {
    sync: InitialSync;
    exchange: SumsExchange;
  } {
    const exchange = new SumsExchange({
      vm: 'vm1',
      generation: 'g2',
      disks: [{ size: this.capture.size }],
      file: path.join(this.dir, 'resync-sums.bin'),
      options: { blockBytes: BLOCK, waitMs: 30_000, attempts: 3, ...o.sums },
      send: (r) => {
        if (r === undefined) return;
        this.requests.push(r);
        const answer = this.onRequest;
        if (answer !== undefined) setImmediate(() => answer(r));
      },
      log,
    });
    const sync = new InitialSync({
      captures: [this.capture],
      lsns: this.lsns,
      journal: this.journal,
      startAt: o.startAt ?? 0,
      sums: exchange,
      log,
      ...(o.markEveryBytes !== undefined ? { markEveryBytes: o.markEveryBytes } : {}),
      ...(o.parallel !== undefined ? { parallel: o.parallel } : {}),
      onProgress: (copied, complete) => {
        this.progress.unshift({ copied, complete });
        return Promise.resolve();
      },
    });
    return { sync, exchange };
  }

  /** Answers like a processor: the replica's sums in messages of `perMessage` blocks, then the end. */
  async answer(exchange: SumsExchange, o: { perMessage?: number; skip?: number } = {}): Promise<void> {
    const sums = blockSums(await fsp.readFile(this.replica), BLOCK);
    const per = o.perMessage ?? 300;
    const blocks = sums.length / BLOCK_SUM_BYTES;
    for (let first = 0, n = 0; first < blocks; first += per, n++) {
      if (n === o.skip) continue;
      const part = sums.subarray(first * BLOCK_SUM_BYTES, Math.min(blocks, first + per) * BLOCK_SUM_BYTES);
      await exchange.onMessage({
        t: 'sums',
        vm: 'vm1',
        generation: 'g2',
        disk: 0,
        first,
        blockBytes: BLOCK,
        sums: part,
      });
    }
    await exchange.onMessage({ t: 'sums-end', vm: 'vm1', generation: 'g2', blockBytes: BLOCK, available: true });
  }

  /** The journal's records from `from`, without payloads. */
  async records(from = 1): Promise<Omit<ChangeRecord, 'data' | 'time'>[]> {
    const out = [];
    for await (const r of this.journal.read(from))
      out.push({ lsn: r.lsn, kind: r.kind, disk: r.disk, offset: r.offset, length: r.length });
    return out;
  }

  /** Replays the journal past `applied` onto the replica, as the processor applies the stream. */
  async replay(): Promise<void> {
    const replica = FileBackend.open(this.replica);
    try {
      for await (const r of this.journal.read(this.applied + 1)) {
        await applyRecord(replica, r);
        this.applied = r.lsn;
      }
    } finally {
      await replica.close();
    }
  }

  async close(): Promise<void> {
    await this.journal.close();
    await this.image.close();
  }
}

/** Records that change data (the copy's and the VM's), without the SYNC markers. */
export function dataRecords<R extends { kind: number }>(rs: readonly R[]): R[] {
  return rs.filter((r) => r.kind !== RecordKind.SYNC);
}
