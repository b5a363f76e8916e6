import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { DiskInfo } from '@site-recovery/shared';
import { expect } from 'vitest';
import type { ProcessorOptions } from '../../src/processor.js';
import type { ProcessorCase, ProcessorCases } from '../processor-cases.js';
import type { TestAgent } from '../test-agent.js';
import { Workload } from '../workload.js';
import { MiB, api, expectImages, until } from '../helpers.js';

export const GROUP = 'shop';
export const DISKS: DiskInfo[] = [
  { id: 'os', size: 2 * MiB },
  { id: 'data', size: 1 * MiB },
];

export interface Point {
  id: string;
  time: string;
  lsn: number;
  kind: string;
  undoBytes: number;
  group?: { name: string; point: string };
}

export interface Manifest {
  vm: string;
  kind: string;
  point: { id: string; lsn: number; kind: string; group?: { name: string; point: string } };
  disks: { id: string; size: number; path: string }[];
  split?: { group: string; left: string[] };
}

export type ApiError = { code: string; message: string };

/**
 * One VM of a test group: the test agent that feeds the real cache-store, and the records it builds
 * (so every point can be compared with the image the source had at its LSN).
 */
export class Member {
  readonly w: Workload;
  private sent = 0;

  constructor(
    readonly vm: string,
    readonly agent: TestAgent,
    seed: number,
  ) {
    this.w = new Workload(DISKS, seed);
  }

  /** Writes to the same blocks the next ones overwrite, so an image tells which side of a mark it is from. */
  writes(): void {
    this.w.write(0, 0, 64 * 1024);
    this.w.write(1, 4096, 8192);
    this.w.random(3, 64 * 1024);
  }

  /** `round`'s mark, with writes before and after it; returns the mark's LSN. */
  mark(round: string, members: readonly string[], time: number): number {
    this.writes();
    const lsn = this.w.group('mark', {
      group: GROUP,
      round,
      coordinator: members[0]!,
      members: [...members],
      time,
    }).lsn;
    this.writes();
    return lsn;
  }

  commit(round: string): void {
    this.w.group('commit', { group: GROUP, round });
    this.writes();
  }

  abort(round: string, failedBy: string, code: string, reason: string): void {
    this.w.group('abort', { group: GROUP, round, failedBy, code, reason });
    this.writes();
  }

  /** Sends every record built and not sent yet, in batches of at most 7 (so marks fall inside batches). */
  async flush(c: ProcessorCase): Promise<void> {
    const last = this.w.lastLsn;
    while (this.sent < last) {
      const to = Math.min(last, this.sent + 7);
      const copy = this.w.range(this.sent + 1, to).some((r) => r.kind === 4);
      await this.agent.send(this.w.range(this.sent + 1, to), copy ? { done: 1, total: 1 } : undefined);
      this.sent = to;
    }
    await c.cs.tap.confirmedAtLeast(this.vm, last);
  }
}

/** A fresh cache-store and processor, and an agent per VM in group {@link GROUP}; `copied` ones finished their initial copy. */
export async function startGroup(
  cases: ProcessorCases,
  vms: readonly string[],
  o: { options?: ProcessorOptions; notCopied?: readonly string[] } = {},
): Promise<{ c: ProcessorCase; members: Member[] }> {
  const c = await cases.start(o.options !== undefined ? { options: o.options } : {});
  const members: Member[] = [];
  for (const [i, vm] of vms.entries()) {
    const m = new Member(vm, await c.cs.agent(vm, 'g1', DISKS, GROUP), 100 + i);
    m.writes();
    if (!(o.notCopied ?? []).includes(vm)) m.w.sync(1);
    await m.flush(c);
    members.push(m);
  }
  return { c, members };
}

export async function pointsOf(listen: string, vm: string): Promise<Point[]> {
  const r = await api<Point[]>(listen, 'GET', `/vms/${vm}/points`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}

/** Waits until `vm` lists a point at `lsn` that `ok` accepts; returns it. */
export function pointAt(listen: string, vm: string, lsn: number, what: string, ok: (p: Point) => boolean) {
  return until(`${vm}'s point at LSN ${lsn} to be ${what}`, async () => {
    const p = (await pointsOf(listen, vm)).find((x) => x.lsn === lsn);
    return p !== undefined && ok(p) ? p : undefined;
  });
}

/** The disks of a manifest hold exactly the member's source image after `lsn`. */
export async function expectDisksAt(m: Manifest, member: Member, lsn: number): Promise<void> {
  // The point must be able to tell: the source changed after it.
  expect(member.w.imagesAt(lsn).some((img, i) => !img.equals(member.w.images[i]!))).toBe(true);
  expectImages(await Promise.all(m.disks.map((d) => fsp.readFile(d.path))), member.w.imagesAt(lsn));
}

const SR = path.join(import.meta.dirname, '..', '..', 'dist', 'cli', 'sr.js');

/** The real `sr` CLI (built by `tsc -b`) against a processor in this process. */
export function sr(listen: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  // The processor in these tests takes no token: none is sent, whatever this shell has set.
  const env = { ...process.env };
  delete env['SR_TOKEN_FILE'];
  return new Promise((resolve) => {
    execFile(process.execPath, [SR, '--processor', `http://${listen}`, ...args], { env }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr }),
    );
  });
}
