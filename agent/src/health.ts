import type { AgentStatus } from './agent-status.js';

/** Why the agent is unhealthy: a stable code to alert on and a message that says what to do. */
export interface HealthProblem {
  readonly code: HealthCode;
  readonly message: string;
}

/** What `GET /health` answers: 200 when `ok`, 503 with the problems when not. */
export interface AgentHealth {
  readonly ok: boolean;
  readonly vm: string;
  readonly problems: readonly HealthProblem[];
  /** What needs a look but leaves the VM protected (its own points continue); absent when none. */
  readonly warnings?: readonly HealthProblem[];
}

export const HealthCode = {
  /** The journal failed (I/O error, disk full): VM writes are refused until a new generation's journal takes over. */
  JOURNAL_FAILED: 'SR_JOURNAL_FAILED',
  /** An image write failed after its record was journaled: that disk refuses writes until a restart. */
  IMAGE_WRITE_FAILED: 'SR_IMAGE_WRITE_FAILED',
  /** An image fdatasync failed: that disk refuses writes and flushes, and no checkpoint passes it, until a restart. */
  IMAGE_SYNC_FAILED: 'SR_IMAGE_SYNC_FAILED',
  /** The journal is at its cap: VM writes wait (only an agent without a replication generation). */
  JOURNAL_STALLED: 'SR_JOURNAL_STALLED',
  /**
   * A warning: the journal reached its cap, so the VM's writes are tracked in the dirty bitmap (they
   * go on at full speed) and no recovery point is cut until the resync that follows has ended.
   */
  BITMAP_MODE: 'SR_BITMAP_MODE',
  /** A warning: the regions written in bitmap mode are being resynced; no recovery point until it ends. */
  RESYNCING: 'SR_RESYNCING',
  /** The initial copy's last attempts failed; it keeps retrying. */
  INITIAL_COPY_FAILING: 'SR_INITIAL_COPY_FAILING',
  /** The stream stopped for good (continuity lost): a new generation follows by itself within a second. */
  STREAM_FAILED: 'SR_STREAM_FAILED',
  /**
   * A new generation is decided and could not begin: its attempts fail (retried with backoff), or it
   * waits for the next start (a disk failed). Nothing replicates meanwhile.
   */
  GENERATION_PENDING: 'SR_GENERATION_PENDING',
  /**
   * The cache-store refuses this agent's credential (wrong VM or secret, expired, revoked): nothing is
   * replicated until it is fixed. Reported at once; the agent keeps retrying.
   */
  AUTH_REFUSED: 'SR_AUTH',
  /** The cache-store has been unreachable for longer than the health threshold. */
  CACHE_STORE_UNREACHABLE: 'SR_CACHE_STORE_UNREACHABLE',
  /** A warning: members of the VM's replication group are not connected, so no group point can be cut. */
  GROUP_PEER_DOWN: 'SR_GROUP_PEER_DOWN',
  /** A warning: the group's last rounds failed, so its newest group point is getting old. */
  GROUP_ROUNDS_FAILING: 'SR_GROUP_ROUNDS_FAILING',
  /** Watch mode: the scans of the images keep failing, so nothing new is shipped (agent/src/watch/). */
  WATCH_SCAN_FAILING: 'SR_WATCH_SCAN_FAILING',
} as const;

export type HealthCode = (typeof HealthCode)[keyof typeof HealthCode];

/** What the judgement reads of a status: a fronted agent's, or a watch-mode agent's (which has no NBD side). */
export type HealthInput = Pick<
  AgentStatus,
  'vm' | 'journal' | 'stalled' | 'imageFailures' | 'replication' | 'group' | 'generation'
> & {
  readonly mode?: AgentStatus['mode'] | { readonly state: 'watch' };
};

/**
 * Judges a status: anything that refuses or holds the VM's writes, or stops replication, is a problem
 * at once; a cache-store outage only once it has lasted `disconnectedMs` (short ones are routine).
 */
export function healthOf(
  status: HealthInput,
  o: { readonly disconnectedMs: number; readonly groupRoundsFailed?: number },
  now = Date.now(),
): AgentHealth {
  const problems: HealthProblem[] = [];
  const add = (code: HealthCode, message: string): number => problems.push({ code, message });
  const j = status.journal;
  if (j.failed !== undefined) {
    add(
      HealthCode.JOURNAL_FAILED,
      `the journal failed (${j.failed}); VM writes are refused until a new journal takes over (a new generation ` +
        'begins by itself; see generation.pending if it cannot)',
    );
  }
  for (const f of status.imageFailures ?? []) {
    if (f.op === 'write') {
      add(
        HealthCode.IMAGE_WRITE_FAILED,
        `disk ${f.disk}: an image write failed after its record was journaled (LSN ${f.lsn}: ${f.error}); ` +
          `the disk refuses writes until the agent is restarted, which replays the record`,
      );
    } else {
      add(
        HealthCode.IMAGE_SYNC_FAILED,
        `disk ${f.disk}: an fdatasync of the image failed (${f.error}); the disk refuses writes and flushes and the ` +
          `checkpoint stays below LSN ${f.lsn} until the agent is restarted, which replays the journal from there`,
      );
    }
  }
  if (status.stalled !== undefined) add(HealthCode.JOURNAL_STALLED, status.stalled);
  const rep = status.replication;
  const copy = rep?.initialCopy.failure;
  if (copy !== undefined) {
    add(
      HealthCode.INITIAL_COPY_FAILING,
      `the initial copy failed ${copy.attempts} time(s) in a row (${copy.code}: ${copy.message}); ` +
        (copy.nextRetryAt !== undefined ? `next attempt at ${copy.nextRetryAt}` : 'an attempt is running'),
    );
  }
  const pending = status.generation?.pending;
  if (pending !== undefined && (pending.attempts > 0 || pending.atNextStart !== undefined)) {
    add(
      HealthCode.GENERATION_PENDING,
      `a new generation (${pending.cause}: ${pending.message}) ` +
        (pending.atNextStart !== undefined
          ? `begins only at the next start: ${pending.atNextStart}; restart the agent once the disk is fixed`
          : `failed to begin ${pending.attempts} time(s) (${pending.lastError ?? 'no error recorded'}); ` +
            `next attempt ${pending.nextAttemptAt ?? 'now'}`),
    );
  }
  if (rep?.stream.state === 'failed') {
    add(
      HealthCode.STREAM_FAILED,
      `replication stopped: ${rep.stream.lastError ?? 'no reason recorded'}; a new generation begins by itself`,
    );
  } else if (rep?.stream.refused !== undefined) {
    const r = rep.stream.refused;
    add(
      HealthCode.AUTH_REFUSED,
      `the cache-store at ${rep.stream.url} refuses this agent's credential since ${r.since} ` +
        `(${r.status !== undefined ? `HTTP ${r.status} ` : ''}${r.code}: ${r.message}); nothing replicates and ` +
        `the journal holds ${j.bytes} of its ${j.maxBytes} bytes. Give the agent a valid token for VM ${status.vm} ` +
        `(sr token issue --secret-file <cache-store secret> --vm ${status.vm} --out FILE) and restart it; ` +
        'it keeps retrying meanwhile',
    );
  } else if (rep?.disconnectedSince !== undefined) {
    const downMs = now - Date.parse(rep.disconnectedSince);
    if (downMs >= o.disconnectedMs) {
      add(
        HealthCode.CACHE_STORE_UNREACHABLE,
        `the cache-store at ${rep.stream.url} has been unreachable since ${rep.disconnectedSince} ` +
          `(${Math.round(downMs / 1000)} s${rep.stream.lastError !== undefined ? `; last error: ${rep.stream.lastError}` : ''}); ` +
          `the journal holds ${j.bytes} of its ${j.maxBytes} bytes; once it is full VM writes are tracked in the dirty bitmap`,
      );
    }
  }
  const warnings = [...modeWarnings(status), ...groupWarnings(status, o.groupRoundsFailed ?? 3)];
  return { ok: problems.length === 0, vm: status.vm, problems, ...(warnings.length > 0 ? { warnings } : {}) };
}

/**
 * Bitmap mode keeps the VM running and loses nothing (its regions are resynced), but the replica's
 * points stop moving until the resync ends: a warning.
 */
function modeWarnings(status: HealthInput): HealthProblem[] {
  const m = status.mode;
  if (m === undefined || m.state === 'streaming' || m.state === 'watch') return [];
  const why = m.untrusted !== undefined ? ` (the bitmap found at start was not trusted: ${m.untrusted})` : '';
  if (m.state === 'bitmap')
    return [
      {
        code: HealthCode.BITMAP_MODE,
        message:
          `bitmap mode since ${m.since}${why}: the journal reached its cap of ${status.journal.maxBytes} bytes, so VM ` +
          `writes are tracked in the dirty bitmap (${m.dirtyBytes} bytes dirty) and resynced once the cache-store has ` +
          'taken the journal down to half its cap; no recovery point is cut until that resync ends. Check the link ' +
          'to the cache-store, or give the journal a larger --journal-max-bytes',
      },
    ];
  const r = m.resync;
  return [
    {
      code: HealthCode.RESYNCING,
      message:
        `resyncing the regions written in bitmap mode since ${m.since}${why}: ${r?.percent ?? 0}% done, ` +
        `${m.dirtyBytes} bytes left; no recovery point is cut until it ends`,
    },
  ];
}

/** A group that cannot cut points leaves each VM protected on its own: a warning, never unhealthy. */
function groupWarnings(status: HealthInput, roundsFailed: number): HealthProblem[] {
  const g = status.group;
  if (g === undefined) return [];
  const warnings: HealthProblem[] = [];
  const down = g.peers.filter((p) => !p.connected);
  if (down.length > 0) {
    warnings.push({
      code: HealthCode.GROUP_PEER_DOWN,
      message:
        `group ${g.group}: not connected to ${down.map((p) => `${p.vm} (${p.address}, since ${p.since})`).join(', ')}; ` +
        'no group point is cut until every member is back. Check that those agents run, that their group port is ' +
        'open, and the group peer log lines (SR_GROUP_* codes) on both sides',
    });
  }
  if (g.rounds.failedInARow >= roundsFailed) {
    const f = g.lastFailure;
    warnings.push({
      code: HealthCode.GROUP_ROUNDS_FAILING,
      message:
        `group ${g.group}: the last ${g.rounds.failedInARow} rounds failed` +
        (f !== undefined
          ? `, the latest (${f.round}) with ${f.code}${f.failedBy !== undefined ? ` because of ${f.failedBy}` : ''}: ${f.reason}`
          : ''),
    });
  }
  return warnings;
}
