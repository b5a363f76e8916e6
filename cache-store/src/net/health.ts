import { ErrorCode, JsonReply, type Logger, type Route } from '@site-recovery/shared';
import type { StreamHub } from './stream-hub.js';

/** One reason the cache-store cannot do its job right now. */
export interface HealthProblem {
  /** Stable error code: SR_NO_SPACE, SR_IO, SR_JOURNAL_CORRUPT. */
  readonly code: string;
  readonly message: string;
  /** The VM it concerns; absent for the whole store. */
  readonly vm?: string;
}

/** `GET /health` when something is wrong (served with status 503). */
export interface Unhealthy {
  readonly ok: false;
  readonly problems: readonly HealthProblem[];
}

/**
 * `GET /health`: 200 `{ok:true}` when the store takes writes and every VM's log takes appends, else
 * 503 with the problems — the data directory failing a small synced write (disk full, read-only, I/O
 * errors), a VM's log that stopped taking appends after a storage failure (until its agent
 * reconnects and it resumes), a VM set aside as damaged. A change of the problems is logged once,
 * not on every request.
 */
export class HealthCheck {
  private lastLogged = '';

  constructor(
    private readonly hub: StreamHub,
    private readonly log: Logger,
  ) {}

  async problems(): Promise<HealthProblem[]> {
    const problems: HealthProblem[] = [];
    const storage = await this.hub.store.checkWritable();
    if (storage !== undefined) problems.push({ code: storage.code, message: storage.message });
    for (const v of this.hub.status()) {
      if (v.failed !== undefined)
        problems.push({
          code: v.failedCode ?? ErrorCode.IO,
          message: `${v.failed}; the log takes appends again when the agent reconnects and storage works`,
          vm: v.vm,
        });
    }
    for (const d of this.hub.store.damaged()) {
      problems.push({
        code: ErrorCode.JOURNAL_CORRUPT,
        message: `stored stream damaged (${d.error}); set aside until its agent starts a new generation (sr-agent --resync)`,
        vm: d.vm,
      });
    }
    return problems;
  }

  /** The route's answer. */
  async answer(): Promise<{ ok: true } | JsonReply> {
    const problems = await this.problems();
    this.note(problems);
    return problems.length === 0 ? { ok: true } : new JsonReply(503, { ok: false, problems } satisfies Unhealthy);
  }

  private note(problems: readonly HealthProblem[]): void {
    const key = problems.map((p) => `${p.vm ?? ''}:${p.code}`).join(',');
    if (key === this.lastLogged) return;
    this.lastLogged = key;
    if (problems.length === 0) this.log.info('healthy again');
    else this.log.warn({ problems }, 'unhealthy');
  }
}

/**
 * The health routes. With authentication, `GET /health` stays open for load balancers and
 * monitoring but says only `{ok}` (200 or 503): the problems name VMs and files. The problems are
 * at `GET /health/details`, which needs a processor token like `/status`. Without authentication
 * both answer with the problems.
 */
export function healthRoutes(health: HealthCheck, authenticated: boolean): Route[] {
  const bare = async (): Promise<{ ok: true } | JsonReply> => {
    const answer = await health.answer();
    return answer instanceof JsonReply ? new JsonReply(503, { ok: false }) : answer;
  };
  return [
    { method: 'GET', path: '/health', open: true, handler: authenticated ? bare : () => health.answer() },
    { method: 'GET', path: '/health/details', handler: () => health.answer() },
  ];
}
