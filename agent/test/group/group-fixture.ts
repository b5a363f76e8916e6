import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { pino } from 'pino';
import { freePort } from '@site-recovery/test';
import { decodeGroupRecord, isGroupKind, type GroupRecord } from '@site-recovery/shared';
import { LsnSequence } from '../../src/backend/capture-filter.js';
import type { GroupConfig, GroupPeer, PeerLimits } from '../../src/group/group-config.js';
import { ReplicationGroup } from '../../src/group/replication-group.js';
import { WriteGate } from '../../src/group/write-gate.js';
import { FileJournal } from '../../src/journal/file-journal.js';
import type { Journal } from '../../src/journal/journal.js';

export const GROUP = 'shop';
export const SECRET = randomBytes(32);

export { freePort };

/** `--peers` of a group whose members listen on loopback ports chosen now. */
export async function loopbackPeers(names: readonly string[]): Promise<GroupPeer[]> {
  const peers: GroupPeer[] = [];
  for (const vm of names) peers.push({ vm, host: '127.0.0.1', port: await freePort() });
  return peers;
}

/** Log lines of a member, parsed, for asserting what it logged. */
export class LogLines {
  readonly lines: Record<string, unknown>[] = [];
  readonly logger = pino(
    { level: 'info' },
    {
      write: (line: string) => {
        this.lines.push(JSON.parse(line) as Record<string, unknown>);
        if (process.env['SR_LOG_LEVEL'] === 'debug') process.stderr.write(line);
      },
    },
  );

  withCode(code: string): Record<string, unknown>[] {
    return this.lines.filter((l) => l['code'] === code);
  }
}

/** One group member in this process: its own journal, LSN sequence and write gate; no NBD. */
export interface TestMember {
  readonly vm: string;
  readonly dataDir: string;
  readonly journal: Journal;
  readonly lsns: LsnSequence;
  readonly gate: WriteGate;
  readonly group: ReplicationGroup;
  readonly log: LogLines;
  close(): Promise<void>;
}

export interface MemberOptions {
  readonly peers: readonly GroupPeer[];
  readonly frequencyMs: number;
  readonly holdTimeoutMs?: number;
  readonly secret?: Buffer;
  readonly limits?: Partial<PeerLimits>;
}

/** Starts member `vm` with its data dir at `<root>/<vm>` (kept across restarts). */
export async function startMember(root: string, vm: string, o: MemberOptions): Promise<TestMember> {
  const dataDir = path.join(root, vm);
  const journal = await FileJournal.open(path.join(dataDir, 'journal'));
  const lsns = new LsnSequence(journal.lastLsn);
  const gate = new WriteGate();
  const log = new LogLines();
  const config: GroupConfig = {
    name: GROUP,
    secret: o.secret ?? SECRET,
    peers: o.peers,
    frequencyMs: o.frequencyMs,
    holdTimeoutMs: o.holdTimeoutMs ?? 500,
    ...(o.limits !== undefined ? { limits: o.limits } : {}),
  };
  const group = await ReplicationGroup.start({ vm, config, dataDir, journal, lsns, gate, log: log.logger });
  let closed: Promise<void> | undefined;
  return {
    vm,
    dataDir,
    journal,
    lsns,
    gate,
    group,
    log,
    close: () =>
      (closed ??= (async () => {
        await group.close();
        await journal.close();
      })()),
  };
}

/** The group records of a journal, in LSN order. */
export async function groupRecords(journal: Journal): Promise<(GroupRecord & { lsn: number })[]> {
  const out: (GroupRecord & { lsn: number })[] = [];
  for await (const r of journal.read(journal.firstLsn)) {
    if (isGroupKind(r.kind)) out.push({ ...decodeGroupRecord(r.kind, r.data), lsn: r.lsn });
  }
  return out;
}

/** Rounds the journal closed with `kind` (mark, commit or abort). */
export async function roundsOf(journal: Journal, kind: 'mark' | 'commit' | 'abort'): Promise<string[]> {
  const k = { mark: 6, commit: 7, abort: 8 }[kind];
  return (await groupRecords(journal)).filter((r) => r.kind === k).map((r) => r.doc.round);
}
