import {
  RecordKind,
  encodeGroupRecord,
  type GroupAbort,
  type GroupCommit,
  type GroupMark,
  type Logger,
} from '@site-recovery/shared';
import type { LsnSequence } from '../backend/capture-filter.js';
import type { Journal } from '../journal/journal.js';
import { GroupCode } from './group-codes.js';
import type { GroupStats } from './group-stats.js';
import type { TermStore } from './term-store.js';
import type { WriteGate } from './write-gate.js';

/** Why this member cannot be cut now. */
export interface Refusal {
  readonly code: string;
  readonly reason: string;
}

export interface GroupMemberOptions {
  readonly group: string;
  readonly vm: string;
  readonly journal: Journal;
  readonly lsns: LsnSequence;
  readonly gate: WriteGate;
  readonly terms: TermStore;
  readonly holdTimeoutMs: number;
  readonly stats: GroupStats;
  /** Whether the VM's replication allows a cut now (initial copy done, stream not failed). */
  readonly canCut?: () => Refusal | undefined;
  readonly log: Logger;
}

interface Held {
  readonly round: string;
  readonly coordinator: string;
  readonly timer: NodeJS.Timeout;
  /** The other members of the round whose READY this member has not seen yet. */
  readonly waiting: Set<string>;
}

/** READYs kept for rounds this member has not been asked to prepare yet (a peer nearer than the coordinator). */
const EARLY_READY_ROUNDS = 64;

type Abort = Omit<GroupAbort, 'group' | 'round'>;

/**
 * A member's side of the barrier (docs/multi-vm.md): at PREPARE it journals GROUP_MARK under the next
 * LSN and holds the replies of every later write, in one tick; at COMMIT it journals GROUP_COMMIT and
 * releases; on ABORT, its hold timeout, or the coordinator's link dropping, it journals GROUP_ABORT
 * and releases. A hold never outlives the timeout, whatever the peers do.
 */
export class GroupMember {
  private held: Held | undefined;
  private closed = false;
  /** round → members whose READY arrived before this member's PREPARE did. */
  private readonly early = new Map<string, Set<string>>();

  constructor(private readonly o: GroupMemberOptions) {}

  /** The round whose writes are held now. */
  get holding(): string | undefined {
    return this.held?.round;
  }

  /** A PREPARE from `from` (this VM itself when it coordinates): READY (undefined) or a refusal. */
  prepare(from: string, term: number, mark: GroupMark): Refusal | undefined {
    const refusal = this.check(from, term, mark);
    if (refusal !== undefined) {
      this.o.stats.refused++;
      this.o.stats.failed({ round: mark.round, code: refusal.code, failedBy: this.o.vm, reason: refusal.reason });
      this.o.log.info({ group: this.o.group, round: mark.round, from, ...refusal }, 'group round refused');
      return refusal;
    }
    let data: Buffer;
    try {
      data = encodeGroupRecord(mark);
    } catch (err) {
      this.o.stats.refused++;
      return { code: GroupCode.PROTOCOL, reason: (err as Error).message };
    }
    this.o.terms.observe(term, from);
    // One tick from the LSN to the hold: no write can take an LSN in between (capture-filter.ts).
    const lsn = this.o.lsns.next();
    const logged = this.o.journal.append({
      lsn,
      kind: RecordKind.GROUP_MARK,
      disk: 0,
      offset: 0,
      length: 0,
      data,
      time: Date.now(),
    });
    this.o.gate.hold(lsn);
    const timer = setTimeout(
      () =>
        this.finish(mark.round, {
          code: GroupCode.TIMEOUT,
          reason: `no COMMIT from ${from} within the hold timeout of ${this.o.holdTimeoutMs} ms`,
        }),
      this.o.holdTimeoutMs,
    );
    // The coordinator marks itself before it sends PREPARE: its PREPARE is its READY.
    const waiting = new Set(mark.members.filter((m) => m !== this.o.vm && m !== from));
    for (const vm of this.early.get(mark.round) ?? []) waiting.delete(vm);
    this.early.delete(mark.round);
    this.held = { round: mark.round, coordinator: from, timer, waiting };
    logged.catch((err: Error) =>
      this.finish(mark.round, { code: GroupCode.JOURNAL, reason: `the mark could not be journaled: ${err.message}` }),
    );
    if (waiting.size === 0 && from !== this.o.vm) this.finish(mark.round, undefined);
    return undefined;
  }

  /**
   * Another member is READY for `round`. Once every member of the held round is, none can still take
   * an LSN below its mark for a write caused by one released here: the same condition the coordinator's
   * COMMIT stands for, heard one hop sooner. So this member commits by itself, whichever comes first.
   */
  ready(from: string, round: string): void {
    const h = this.held;
    if (h?.round === round) {
      h.waiting.delete(from);
      if (h.waiting.size === 0 && h.coordinator !== this.o.vm) this.finish(round, undefined);
      return;
    }
    let set = this.early.get(round);
    if (set === undefined) {
      set = new Set();
      this.early.set(round, set);
      if (this.early.size > EARLY_READY_ROUNDS) this.early.delete(this.early.keys().next().value!);
    }
    set.add(from);
  }

  commit(from: string, round: string): void {
    if (this.held?.round !== round || this.held.coordinator !== from) {
      this.o.log.info({ group: this.o.group, round, from }, 'late or unexpected group COMMIT ignored');
      return;
    }
    this.finish(round, undefined);
  }

  abort(from: string, round: string, a: Abort): void {
    if (this.held?.round !== round || this.held.coordinator !== from) return;
    this.finish(round, a);
  }

  /** The link to `vm` dropped: if it coordinates the held round, the round is over for this member. */
  peerDown(vm: string): void {
    const h = this.held;
    if (h !== undefined && h.coordinator === vm)
      this.finish(h.round, {
        code: GroupCode.COORDINATOR_DOWN,
        failedBy: vm,
        reason: `the link to the coordinator ${vm} dropped during the round`,
      });
  }

  /** Gives up the round this member holds, if any (journaled as an abort with `a`'s reason). */
  abandon(a: Abort): void {
    const h = this.held;
    if (h !== undefined) this.finish(h.round, a);
  }

  /** Ends any hold (journaled as an abort) and takes no more rounds. */
  close(): void {
    this.closed = true;
    const h = this.held;
    if (h !== undefined) this.finish(h.round, { code: GroupCode.SHUTTING_DOWN, reason: 'the agent is stopping' });
  }

  private check(from: string, term: number, mark: GroupMark): Refusal | undefined {
    const o = this.o;
    if (this.closed) return { code: GroupCode.SHUTTING_DOWN, reason: 'the agent is stopping' };
    if (mark.group !== o.group || mark.coordinator !== from || !mark.members.includes(o.vm))
      return { code: GroupCode.PROTOCOL, reason: `the PREPARE of ${from} is not for this member of ${o.group}` };
    if (!mark.round.startsWith(`${term}.`))
      return { code: GroupCode.PROTOCOL, reason: `round ${mark.round} is not of term ${term}` };
    if (term < o.terms.highest)
      return { code: GroupCode.STALE_TERM, reason: `term ${term} is below ${o.terms.highest}, the highest seen` };
    if (term === o.terms.highest && o.terms.coordinator !== undefined && o.terms.coordinator !== from)
      return { code: GroupCode.TERM_USED, reason: `term ${term} is already used by ${o.terms.coordinator}` };
    if (this.held !== undefined)
      return { code: GroupCode.BUSY, reason: `writes are held for round ${this.held.round}` };
    const j = o.journal.stats();
    if (j.failed !== undefined) return { code: GroupCode.NOT_READY, reason: `the journal failed: ${j.failed}` };
    // Replication's reason first: in bitmap mode the journal stays at its cap, but that is not why.
    const refusal = o.canCut?.();
    if (refusal !== undefined) return refusal;
    if (o.journal.atCap) return { code: GroupCode.NOT_READY, reason: 'the journal is at its cap' };
    return undefined;
  }

  /** Journals the round's end and releases the held replies, whatever the journal does. */
  private finish(round: string, abort: Abort | undefined): void {
    const h = this.held;
    if (h === undefined || h.round !== round) return;
    this.held = undefined;
    clearTimeout(h.timer);
    const g = this.o.group;
    let result;
    try {
      const doc: GroupCommit | GroupAbort =
        abort === undefined ? { group: g, round } : { group: g, round, ...abort, reason: abort.reason.slice(0, 1024) };
      const data = encodeGroupRecord(doc);
      const lsn = this.o.lsns.next();
      this.o.journal
        .append({
          lsn,
          kind: abort === undefined ? RecordKind.GROUP_COMMIT : RecordKind.GROUP_ABORT,
          disk: 0,
          offset: 0,
          length: 0,
          data,
          time: Date.now(),
        })
        .catch((err: Error) =>
          this.o.log.error({ group: g, round, err: err.message }, 'the end of a group round could not be journaled'),
        );
    } catch (err) {
      this.o.log.error(
        { group: g, round, err: (err as Error).message },
        'the end of a group round could not be journaled',
      );
    } finally {
      result = this.o.gate.release();
    }
    const outcome = abort === undefined ? 'committed' : 'aborted';
    this.o.stats.barrier(round, outcome, result);
    if (abort !== undefined) this.o.stats.failed({ round, ...abort });
    this.o.log.info(
      {
        group: g,
        round,
        outcome,
        ...(abort !== undefined ? { code: abort.code, failedBy: abort.failedBy, reason: abort.reason } : {}),
        holdMs: round3(result.durationMs),
        writesHeld: result.writesHeld,
        maxWriteHoldMs: round3(result.maxWriteHoldMs),
      },
      `group barrier ${outcome}`,
    );
  }
}

const round3 = (ms: number): number => Math.round(ms * 1000) / 1000;
