import type { BackendFilter, BlockBackend } from '@site-recovery/shared/nbd';

export type FaultOp = 'read' | 'write' | 'zero' | 'trim' | 'flush';

/**
 * Decides whether one call fails: return the error to throw, or undefined to pass the call on.
 * `offset` and `length` are 0 for flush.
 */
export type FaultPlan = (op: FaultOp, offset: number, length: number) => Error | undefined;

/**
 * Fault injection as a filter (nbdkit's `error` filter): failing storage below the capture point,
 * so tests can show what a disk error does to ordering, journal, checkpoint and replica.
 */
export function faultFilter(plan: FaultPlan): BackendFilter {
  return (next: BlockBackend): BlockBackend => {
    const check = (op: FaultOp, offset: number, length: number): void => {
      const err = plan(op, offset, length);
      if (err !== undefined) throw err;
    };
    return {
      get size() {
        return next.size;
      },
      read: async (offset, length) => {
        check('read', offset, length);
        return next.read(offset, length);
      },
      write: async (offset, data, fua) => {
        check('write', offset, data.length);
        await next.write(offset, data, fua);
      },
      zero: async (offset, length, fua, mayTrim) => {
        check('zero', offset, length);
        await next.zero(offset, length, fua, mayTrim);
      },
      trim: async (offset, length, fua) => {
        check('trim', offset, length);
        await next.trim(offset, length, fua);
      },
      flush: async () => {
        check('flush', 0, 0);
        await next.flush();
      },
      close: () => next.close(),
    };
  };
}

/** An error as the file system reports it (errno code set), e.g. `ioError('EIO')`. */
export function ioError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected fault`), { code });
}
