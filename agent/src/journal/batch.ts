/**
 * One group-commit batch of the journal: every record appended while the writer was busy, written
 * with one vectored write. `bufs` are whole encoded records back to back, each a header followed by
 * its payload if it has one (DirectAppender relies on that order).
 */
export interface Batch {
  readonly bufs: Buffer[];
  bytes: number;
  lastLsn: number;
  /** Settles when the batch is written (not synced). */
  readonly done: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

export function newBatch(): Batch {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const done = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  done.catch(() => undefined); // callers that ignore a batch's result must not crash the process
  return { bufs: [], bytes: 0, lastLsn: 0, done, resolve, reject };
}
