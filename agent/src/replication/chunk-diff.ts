import { BLOCK_SUM_BYTES, blockSums, zeroBlockSum } from '@site-recovery/shared';
import { isZero, type CopyRun } from '../backend/capture-filter.js';

/**
 * The parts of a chunk to send to a replica whose blocks have the sums `replica` (`BLOCK_SUM_BYTES`
 * per block of `blockBytes`, the chunk's blocks in order; the last may be short): every block whose
 * sum differs, as a ZERO run when the source block is all zero, else as a WRITE run; neighbours of one
 * kind make one run. A block whose sum equals the replica's is left out: the stream's later
 * overwrites give both the same result (docs/replication-protocol.md, "Copy by difference").
 */
export function diffRuns(data: Buffer, replica: Buffer, blockBytes: number): CopyRun[] {
  const runs: CopyRun[] = [];
  const blocks = Math.ceil(data.length / blockBytes);
  if (replica.length !== blocks * BLOCK_SUM_BYTES)
    throw new Error(`${replica.length} bytes of sums for a chunk of ${blocks} blocks`);
  for (let i = 0; i < blocks; i++) {
    const start = i * blockBytes;
    const block = data.subarray(start, Math.min(data.length, start + blockBytes));
    // A zero block costs a compare instead of a hash: sparse disks are mostly zero blocks.
    const zero = isZero(block);
    const sum = zero ? zeroBlockSum(block.length) : blockSums(block, blockBytes);
    if (sum.compare(replica, i * BLOCK_SUM_BYTES, (i + 1) * BLOCK_SUM_BYTES) === 0) continue;
    const last = runs.at(-1);
    if (last !== undefined && last.zero === zero && last.start + last.length === start)
      runs[runs.length - 1] = { start: last.start, length: last.length + block.length, zero };
    else runs.push({ start, length: block.length, zero });
  }
  return runs;
}

/**
 * The whole chunk, for a replica nothing is known of: a ZERO run when it is all zero (the replica
 * may hold anything there: it is no longer wiped for a new generation), else one WRITE run.
 */
export function wholeChunk(data: Buffer): CopyRun[] {
  return [{ start: 0, length: data.length, zero: isZero(data) }];
}
