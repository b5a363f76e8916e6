import type { HoldResult } from './write-gate.js';
import type { AuthFailures, PeerStatus } from './peer-mesh.js';

/** The `group` section of the agent's status (agent/README.md, "Replication groups"). */
export interface GroupStatus {
  readonly group: string;
  readonly vm: string;
  /** The member this one takes for coordinator: the lowest name among itself and its connected peers. */
  readonly coordinator: string;
  /** The highest term this member has seen (its own, when it coordinates). */
  readonly term: number;
  /** How often the coordinator starts a round (the processor's policy, or the default). */
  readonly frequencyMs: number;
  readonly holdTimeoutMs: number;
  readonly listen: string;
  readonly peers: readonly PeerStatus[];
  readonly rounds: RoundCounts;
  /** The round whose writes are held now, and how many replies wait (writes done, held by the gate only). */
  readonly holding?: { readonly round: string; readonly writesHeld: number };
  /** The last barrier on this member: from its mark to its COMMIT or ABORT. */
  readonly last?: {
    readonly round: string;
    readonly outcome: 'committed' | 'aborted';
    readonly at: string;
    readonly holdMs: number;
    readonly writesHeld: number;
    readonly maxWriteHoldMs: number;
  };
  /** The last round that did not commit, as this member saw it (as coordinator or member). */
  readonly lastFailure?: {
    readonly round: string;
    readonly code: string;
    readonly failedBy?: string;
    readonly reason: string;
    readonly at: string;
  };
  /** Reply holds of the most recent held writes (at most `limits.holdWindow` of them, `count`), in ms. */
  readonly writeHoldMs: { readonly p50: number; readonly p99: number; readonly max: number; readonly count: number };
  /** Peers refused at the handshake or dropped for a bad frame (wrong secret, unknown VM, replay, ...). */
  readonly authFailures: AuthFailures;
}

export interface RoundCounts {
  /** Rounds this member started as coordinator (those that failed at once included). */
  readonly started: number;
  /** Rounds this member's journal closed with GROUP_COMMIT. */
  readonly committed: number;
  /** Rounds this member's journal closed with GROUP_ABORT. */
  readonly aborted: number;
  /** PREPAREs this member refused. */
  readonly refused: number;
  /** Rounds in a row, up to now, that this member saw fail (as coordinator or member); 0 after a commit. */
  readonly failedInARow: number;
}

type Failure = NonNullable<GroupStatus['lastFailure']>;

/** Counters and hold figures of one member, for its status. */
export class GroupStats {
  started = 0;
  committed = 0;
  aborted = 0;
  refused = 0;
  failedInARow = 0;
  last: GroupStatus['last'];
  lastFailure: Failure | undefined;
  private readonly holds: Float64Array;
  private held = 0;

  constructor(window: number) {
    this.holds = new Float64Array(Math.max(1, window));
  }

  barrier(round: string, outcome: 'committed' | 'aborted', r: HoldResult): void {
    if (outcome === 'committed') {
      this.committed++;
      this.failedInARow = 0;
    } else this.aborted++;
    this.last = {
      round,
      outcome,
      at: new Date().toISOString(),
      holdMs: round3(r.durationMs),
      writesHeld: r.writesHeld,
      maxWriteHoldMs: round3(r.maxWriteHoldMs),
    };
    for (const ms of r.writeHoldsMs) {
      this.holds[this.held++ % this.holds.length] = ms;
    }
  }

  /** A round that did not commit. Counted once per round even when seen both as coordinator and member. */
  failed(f: Omit<Failure, 'at'>): void {
    if (this.lastFailure?.round !== f.round) this.failedInARow++;
    this.lastFailure = { ...f, at: new Date().toISOString() };
  }

  writeHoldMs(): GroupStatus['writeHoldMs'] {
    const n = Math.min(this.held, this.holds.length);
    if (n === 0) return { p50: 0, p99: 0, max: 0, count: 0 };
    const sorted = this.holds.slice(0, n).sort();
    const at = (q: number): number => round3(sorted[Math.min(n - 1, Math.floor(q * n))]!);
    return { p50: at(0.5), p99: at(0.99), max: round3(sorted[n - 1]!), count: n };
  }

  counts(): RoundCounts {
    return {
      started: this.started,
      committed: this.committed,
      aborted: this.aborted,
      refused: this.refused,
      failedInARow: this.failedInARow,
    };
  }
}

const round3 = (ms: number): number => Math.round(ms * 1000) / 1000;
