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
}

export const HealthCode = {
  /** The journal failed (I/O error, disk full): VM writes are refused until a restart. */
  JOURNAL_FAILED: 'SR_JOURNAL_FAILED',
  /** An image write failed after its record was journaled: that disk refuses writes until a restart. */
  IMAGE_WRITE_FAILED: 'SR_IMAGE_WRITE_FAILED',
  /** An image fdatasync failed: that disk refuses writes and flushes, and no checkpoint passes it, until a restart. */
  IMAGE_SYNC_FAILED: 'SR_IMAGE_SYNC_FAILED',
  /** The journal is at its cap: VM writes wait. */
  JOURNAL_STALLED: 'SR_JOURNAL_STALLED',
  /** The initial copy's last attempts failed; it keeps retrying. */
  INITIAL_COPY_FAILING: 'SR_INITIAL_COPY_FAILING',
  /** The stream stopped for good (continuity lost): only a restart with --resync resumes replication. */
  STREAM_FAILED: 'SR_STREAM_FAILED',
  /**
   * The cache-store refuses this agent's credential (wrong VM or secret, expired, revoked): nothing is
   * replicated until it is fixed. Reported at once; the agent keeps retrying.
   */
  AUTH_REFUSED: 'SR_AUTH',
  /** The cache-store has been unreachable for longer than the health threshold. */
  CACHE_STORE_UNREACHABLE: 'SR_CACHE_STORE_UNREACHABLE',
} as const;

export type HealthCode = (typeof HealthCode)[keyof typeof HealthCode];

/**
 * Judges a status: anything that refuses or holds the VM's writes, or stops replication, is a problem
 * at once; a cache-store outage only once it has lasted `disconnectedMs` (short ones are routine).
 */
export function healthOf(status: AgentStatus, o: { readonly disconnectedMs: number }, now = Date.now()): AgentHealth {
  const problems: HealthProblem[] = [];
  const add = (code: HealthCode, message: string): number => problems.push({ code, message });
  const j = status.journal;
  if (j.failed !== undefined) {
    add(
      HealthCode.JOURNAL_FAILED,
      `the journal failed (${j.failed}); VM writes are refused until the agent is restarted once its disk is fixed`,
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
  if (rep?.stream.state === 'failed') {
    add(HealthCode.STREAM_FAILED, `replication stopped: ${rep.stream.lastError ?? 'no reason recorded'}`);
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
          `the journal holds ${j.bytes} of its ${j.maxBytes} bytes and VM writes wait once it is full`,
      );
    }
  }
  return { ok: problems.length === 0, vm: status.vm, problems };
}
