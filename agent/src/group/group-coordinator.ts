import type { GroupMark, Logger } from '@site-recovery/shared';
import { GroupCode } from './group-codes.js';
import type { GroupMember } from './group-member.js';
import type { PeerMessage } from './group-messages.js';
import type { GroupStats } from './group-stats.js';
import type { TermStore } from './term-store.js';

export interface CoordinatorOptions {
  readonly group: string;
  readonly vm: string;
  /** Every member, this one included, sorted. */
  readonly members: readonly string[];
  readonly member: GroupMember;
  readonly terms: TermStore;
  /** How long the coordinator waits for every READY before it aborts the round. */
  readonly roundTimeoutMs: number;
  readonly frequencyMs: number;
  readonly stats: GroupStats;
  readonly isUp: (vm: string) => boolean;
  readonly send: (vm: string, m: PeerMessage) => boolean;
  readonly log: Logger;
}

interface Round {
  readonly id: string;
  /** Members that got the PREPARE (this one aside). */
  readonly prepared: string[];
  /** Members whose READY has not come. */
  readonly waiting: Set<string>;
  readonly timer: NodeJS.Timeout;
  readonly done: () => void;
}

/**
 * Runs the group's rounds while this member is the coordinator: every `frequencyMs`, PREPARE to all
 * (itself in-process), COMMIT to all once every member is READY, else ABORT to those that got the
 * PREPARE. A member not connected at the start fails the round at once: a cut without the whole
 * group is no group point. Terms: the first round after becoming coordinator, or after hearing of a
 * term at or above its own from another coordinator, takes a new term above every one seen.
 */
export class GroupCoordinator {
  private active = false;
  private stopped = false;
  private term: number | undefined;
  private seq = 0;
  private round: Round | undefined;
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private frequency: number;

  constructor(private readonly o: CoordinatorOptions) {
    this.frequency = o.frequencyMs;
  }

  get frequencyMs(): number {
    return this.frequency;
  }

  /** Whether this member is the coordinator now; becoming it starts the rounds with a new term. */
  setActive(active: boolean): void {
    if (active === this.active || this.stopped) return;
    this.active = active;
    this.o.log.info(
      { group: this.o.group, vm: this.o.vm, coordinator: active },
      active ? 'coordinating the group' : 'no longer coordinating the group',
    );
    if (active) this.term = undefined;
    this.schedule();
  }

  setFrequency(ms: number): void {
    if (ms === this.frequency) return;
    this.o.log.info({ group: this.o.group, from: this.frequency, to: ms }, 'multi-VM frequency changed by the policy');
    this.frequency = ms;
    this.schedule();
  }

  /** Runs one round now unless one is running; resolves when it has committed or failed. */
  runRound(): Promise<void> {
    this.running ??= this.once()
      .catch((err: Error) => this.o.log.error({ group: this.o.group, err: err.message }, 'group round failed to run'))
      .finally(() => (this.running = undefined));
    return this.running;
  }

  onReady(from: string, round: string): void {
    const r = this.round;
    if (r?.id !== round || !r.waiting.delete(from) || r.waiting.size > 0) return;
    for (const vm of r.prepared) this.o.send(vm, { t: 'commit', round });
    this.o.member.commit(this.o.vm, round);
    this.end(r);
  }

  onRefused(from: string, m: { round: string; code: string; reason: string; term: number }): void {
    this.o.terms.observe(m.term);
    if (m.code === GroupCode.STALE_TERM || m.code === GroupCode.TERM_USED) this.term = undefined;
    const r = this.round;
    if (r?.id === m.round && r.waiting.has(from))
      this.fail(r, { code: m.code, failedBy: from, reason: `${from} refused: ${m.reason}` });
  }

  /** This member cannot be in the round it runs (bitmap mode began): ABORT to all. */
  giveUp(a: { code: string; failedBy?: string; reason: string }): void {
    const r = this.round;
    if (r !== undefined) this.fail(r, a);
  }

  /** A member's link dropped: a round waiting for it cannot commit. */
  peerDown(vm: string): void {
    const r = this.round;
    if (r !== undefined && r.waiting.has(vm))
      this.fail(r, { code: GroupCode.MEMBER_DOWN, failedBy: vm, reason: `the link to ${vm} dropped during the round` });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.active = false;
    clearInterval(this.timer);
    const r = this.round;
    if (r !== undefined) this.fail(r, { code: GroupCode.SHUTTING_DOWN, reason: 'the coordinator is stopping' });
    await this.running;
  }

  private schedule(): void {
    clearInterval(this.timer);
    if (!this.active || this.stopped) return;
    this.timer = setInterval(() => void this.runRound(), this.frequency);
    this.timer.unref();
  }

  private async once(): Promise<void> {
    const o = this.o;
    if (!this.active || this.stopped) return;
    const t = o.terms;
    if (this.term === undefined || t.highest > this.term || (t.highest === this.term && t.coordinator !== o.vm)) {
      this.term = await t.next(o.vm);
      this.seq = 0;
      o.log.info({ group: o.group, term: this.term }, 'group coordinator took a new term');
    }
    if (!this.active || this.stopped) return;
    const id = `${this.term}.${++this.seq}`;
    o.stats.started++;
    const others = o.members.filter((m) => m !== o.vm);
    const missing = others.filter((m) => !o.isUp(m));
    if (missing.length > 0) {
      this.failed(id, {
        code: GroupCode.MEMBER_DOWN,
        failedBy: missing[0]!,
        reason: `not connected to ${missing.join(', ')} at the start of the round`,
      });
      return;
    }
    const mark: GroupMark = { group: o.group, round: id, coordinator: o.vm, members: [...o.members], time: Date.now() };
    const own = o.member.prepare(o.vm, this.term, mark);
    if (own !== undefined) {
      this.failed(id, { ...own, failedBy: o.vm, reason: `${o.vm} (the coordinator) refused: ${own.reason}` });
      return;
    }
    await new Promise<void>((done) => {
      const r: Round = {
        id,
        prepared: [],
        waiting: new Set(others),
        timer: setTimeout(() => {
          const late = [...r.waiting];
          this.fail(r, {
            code: GroupCode.TIMEOUT,
            failedBy: late[0]!,
            reason: `no READY from ${late.join(', ')} within ${o.roundTimeoutMs} ms`,
          });
        }, o.roundTimeoutMs),
        done,
      };
      this.round = r;
      for (const vm of others) {
        if (this.round !== r) return; // failed while sending (a link closed under the write)
        if (o.send(vm, { t: 'prepare', term: this.term!, mark })) r.prepared.push(vm);
        else return this.fail(r, { code: GroupCode.MEMBER_DOWN, failedBy: vm, reason: `the link to ${vm} dropped` });
      }
    });
  }

  private fail(r: Round, a: { code: string; failedBy?: string; reason: string }): void {
    if (this.round !== r) return;
    for (const vm of r.prepared) this.o.send(vm, { t: 'abort', round: r.id, ...a });
    this.o.member.abort(this.o.vm, r.id, a);
    this.failed(r.id, a);
    this.end(r);
  }

  private failed(round: string, a: { code: string; failedBy?: string; reason: string }): void {
    this.o.stats.failed({ round, ...a });
    this.o.log.warn({ group: this.o.group, round, ...a }, 'group round failed');
  }

  private end(r: Round): void {
    clearTimeout(r.timer);
    this.round = undefined;
    r.done();
  }
}
