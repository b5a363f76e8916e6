import fsp from 'node:fs/promises';

/**
 * Bytes a process has read so far through read()-family calls, sockets included (`rchar` of
 * /proc/PID/io, summed over its threads). The tests use its growth to see that a server has taken in a
 * request whose effect is not visible otherwise, such as a write that waits inside it.
 */
export async function bytesReadBy(pid: number): Promise<number> {
  const io = await fsp.readFile(`/proc/${pid}/io`, 'utf8');
  const m = /^rchar:\s+(\d+)$/m.exec(io);
  if (m === null) throw new Error(`/proc/${pid}/io has no rchar line`);
  return Number(m[1]);
}
