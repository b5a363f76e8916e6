import fsp from 'node:fs/promises';
import { GenerationCause, type GenerationReason } from './generation-cause.js';

/**
 * Which file a disk image is, beyond its path. The inode number alone is not enough: ext4 hands a
 * deleted file's inode number to the next file created (measured here: `rm` then create gave the same
 * number), so a disk deleted and created anew would pass for the old one. The birth time tells those
 * apart. The device number is left out on purpose: on btrfs subvolumes, NFS and device-mapper volumes
 * it is allocated at mount time and can change across reboots, which would begin a new generation (a
 * full comparison of the disks) after every reboot. Both are kept as decimal strings (from a bigint
 * stat): 64-bit inode numbers do not fit a JSON number.
 */
export interface DiskIdentity {
  readonly ino: string;
  /** Nanoseconds since the epoch; absent where the file system keeps no birth time. */
  readonly birthtimeNs?: string;
}

/**
 * How an image looked after the last write of a clean stop. A `cp` over the image, or a restore that
 * keeps the inode, changes no identity; it moves the modification time.
 */
export interface DiskStamp {
  readonly size: number;
  readonly mtimeNs: string;
}

export interface DiskFacts {
  readonly id: string;
  readonly size: number;
  readonly identity: DiskIdentity;
  readonly stamp: DiskStamp;
}

/** What the data dir recorded of a disk. */
export interface RecordedDisk {
  readonly id: string;
  readonly size: number;
  readonly identity?: DiskIdentity;
}

/** Reads the identity and stamp of the image at `path`. */
export async function diskFacts(id: string, path: string): Promise<DiskFacts> {
  const s = await fsp.stat(path, { bigint: true });
  const birth = s.birthtimeNs > 0n ? { birthtimeNs: s.birthtimeNs.toString() } : {};
  return {
    id,
    size: Number(s.size),
    identity: { ino: s.ino.toString(), ...birth },
    stamp: { size: Number(s.size), mtimeNs: s.mtimeNs.toString() },
  };
}

/** The stamp of the image at `path` now (the last checkpoint of a clean stop records them). */
export async function diskStamp(path: string): Promise<DiskStamp> {
  return (await diskFacts('', path)).stamp;
}

function sameIdentity(a: DiskIdentity, b: DiskIdentity): boolean {
  // A birth time recorded on one side only (a file system that began keeping them) says nothing.
  const births = a.birthtimeNs === undefined || b.birthtimeNs === undefined || a.birthtimeNs === b.birthtimeNs;
  return a.ino === b.ino && births;
}

/**
 * Why the disks found now cannot continue the data dir's generation, or undefined when they can.
 * `stopped` is what the last clean stop recorded (undefined after a crash: then writes after the last
 * checkpoint moved the times, and only identity and size can be judged). Checked in order of weight:
 * another layout, another file, another size, a write while stopped.
 */
export function diskChange(
  recorded: readonly RecordedDisk[],
  now: readonly DiskFacts[],
  stopped: readonly DiskStamp[] | undefined,
): GenerationReason | undefined {
  const ids = (ds: readonly { id: string }[]): string => ds.map((d) => d.id).join(',');
  if (recorded.length !== now.length || recorded.some((d, i) => d.id !== now[i]!.id)) {
    return {
      cause: GenerationCause.DISK_LAYOUT_CHANGED,
      message: `the data dir was made for disks ${ids(recorded)}, the agent now has ${ids(now)}`,
    };
  }
  for (const [i, d] of recorded.entries()) {
    const n = now[i]!;
    if (d.identity !== undefined && !sameIdentity(d.identity, n.identity)) {
      return {
        cause: GenerationCause.DISK_REPLACED,
        message:
          `disk ${d.id} is another file than before (inode ${d.identity.ino}` +
          `${d.identity.birthtimeNs !== undefined ? ` born ${nsToIso(d.identity.birthtimeNs)}` : ''}, now inode ` +
          `${n.identity.ino}${n.identity.birthtimeNs !== undefined ? ` born ${nsToIso(n.identity.birthtimeNs)}` : ''})`,
      };
    }
  }
  for (const [i, d] of recorded.entries()) {
    const n = now[i]!;
    if (d.size !== n.size)
      return { cause: GenerationCause.DISK_RESIZED, message: `disk ${d.id} was ${d.size} bytes and is ${n.size} now` };
  }
  if (stopped !== undefined && stopped.length === now.length) {
    for (const [i, s] of stopped.entries()) {
      const n = now[i]!;
      if (s.mtimeNs !== n.stamp.mtimeNs || s.size !== n.stamp.size) {
        return {
          cause: GenerationCause.DISK_MODIFIED,
          message: `disk ${n.id} was written while the agent was stopped (modified ${nsToIso(n.stamp.mtimeNs)}, after the clean stop's ${nsToIso(s.mtimeNs)})`,
        };
      }
    }
  }
  return undefined;
}

function nsToIso(ns: string): string {
  return new Date(Number(BigInt(ns) / 1_000_000n)).toISOString();
}
