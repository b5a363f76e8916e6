import http from 'node:http';
import https from 'node:https';
import { ErrorCode, authHeaders, type ParsedToken } from '@site-recovery/shared';
import type { Manifest } from '../failover/manifest.js';
import type { PointInfo } from '../points/recovery-point.js';

// The `sr` CLI's view of the processor's control API (JSON over HTTP). node:http rather than fetch:
// fetch (undici) gives up on a response after 300 s without headers, and materialising the disks of a
// large VM for a failover can take longer than that.

export interface VmConfigUpdate {
  crashConsistentFrequencyMs?: number;
  appConsistentFrequencyMs?: number;
  retentionMs?: number;
  /** Tiers of thinning: points older than `olderThanMs` keep one per `keepOneEveryMs`. */
  thinning?: { olderThanMs: number; keepOneEveryMs: number }[];
  source?: { network: string; subnet: string; ip: string };
  target?: { resourceGroup?: string; network?: string; subnet?: string; ip?: string; availabilitySet?: string };
}

/** What `sr` reads of a group in `GET /status`. */
export interface GroupStatusDoc {
  name: string;
  members: string[];
  multiVmFrequencyMs: number;
  rounds?: { completed: number; failed: number; pending?: number };
  lastPoint?: { id: string; time: string; members: string[] };
  lastFailure?: { round: string; failedBy?: string; code: string; reason: string; at: string };
}

/** A group point every member holds (`GET /groups/:group/points`). */
export interface GroupPointDoc {
  id: string;
  time: string;
  members: { vm: string; point: string; lsn: number }[];
}

/** What `sr` reads of `GET /status`; the processor sends more. */
export interface StatusDoc {
  readonly cacheStore: { url: string; connected: boolean };
  readonly groups?: GroupStatusDoc[];
  readonly vms: {
    vm: string;
    group?: string | null;
    state: string;
    appliedLsn: number;
    cacheStoreLastLsn?: number;
    lagMs?: { p50: number; p99: number; samples: number };
    initialSync?: { state: string; percent: number };
    resync?: { remaining: number; total: number; percent: number };
    errorCode?: string;
    error?: string;
  }[];
}

/**
 * A failure of one call. `exitCode` 2: the processor refused with a stable `code`; 1: it could not be
 * reached or did not answer as the API says (nothing is known about whether the request took effect).
 */
export class ControlApiError extends Error {
  constructor(
    readonly exitCode: 1 | 2,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ControlApiError';
  }
}

/** Transport failure code: not one of the processor's, so `sr` says what it means itself. */
const UNREACHABLE = 'SR_UNREACHABLE';

/** How the client proves who it is and checks whom it talks to. */
export interface ControlClientAuth {
  /** An operator token of the processor; a fresh proof of it goes with every request. */
  readonly token?: ParsedToken;
  /** Verifies an https:// processor's certificate; default the system's CAs. */
  readonly ca?: Buffer;
}

export class ControlClient {
  readonly base: URL;

  /** `url` is http(s)://HOST:PORT[/prefix]; a bare HOST:PORT means http. */
  constructor(
    url: string,
    private readonly auth: ControlClientAuth = {},
  ) {
    const text = /^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url : `http://${url}`;
    let u: URL;
    try {
      u = new URL(text);
    } catch {
      throw new ControlApiError(
        2,
        ErrorCode.BAD_OPTION,
        `--processor "${url}" is not a URL; give http://HOST:PORT (the processor's --listen address)`,
      );
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new ControlApiError(2, ErrorCode.BAD_OPTION, `--processor "${url}" must be http:// or https://`);
    }
    if (!u.pathname.endsWith('/')) u.pathname += '/';
    this.base = u;
  }

  points(vm: string): Promise<PointInfo[]> {
    return this.call('GET', `vms/${enc(vm)}/points`) as Promise<PointInfo[]>;
  }

  config(vm: string): Promise<Record<string, unknown>> {
    return this.call('GET', `vms/${enc(vm)}/config`) as Promise<Record<string, unknown>>;
  }

  configure(vm: string, update: VmConfigUpdate): Promise<Record<string, unknown>> {
    return this.call('PUT', `vms/${enc(vm)}/config`, update) as Promise<Record<string, unknown>>;
  }

  failover(vm: string, body: { point: string; deadlineMs?: number }): Promise<Manifest> {
    return this.call('POST', `vms/${enc(vm)}/failover`, body) as Promise<Manifest>;
  }

  testFailover(vm: string, body: { point: string; network: string }): Promise<Manifest> {
    return this.call('POST', `vms/${enc(vm)}/test-failover`, body) as Promise<Manifest>;
  }

  testFailoverCleanup(vm: string): Promise<{ removed: string[] }> {
    return this.call('POST', `vms/${enc(vm)}/test-failover-cleanup`, {}) as Promise<{ removed: string[] }>;
  }

  commit(vm: string): Promise<unknown> {
    return this.call('POST', `vms/${enc(vm)}/commit`, {});
  }

  status(): Promise<StatusDoc> {
    return this.call('GET', 'status') as Promise<StatusDoc>;
  }

  groupConfig(group: string): Promise<Record<string, unknown>> {
    return this.call('GET', `groups/${enc(group)}/config`) as Promise<Record<string, unknown>>;
  }

  configureGroup(group: string, update: { multiVmFrequencyMs?: number }): Promise<Record<string, unknown>> {
    return this.call('PUT', `groups/${enc(group)}/config`, update) as Promise<Record<string, unknown>>;
  }

  groupPoints(group: string): Promise<GroupPointDoc[]> {
    return this.call('GET', `groups/${enc(group)}/points`) as Promise<GroupPointDoc[]>;
  }

  groupFailover(group: string, body: { point: string }): Promise<{ vms: Manifest[] }> {
    return this.call('POST', `groups/${enc(group)}/failover`, body) as Promise<{ vms: Manifest[] }>;
  }

  groupTestFailover(group: string, body: { point: string; network: string }): Promise<{ vms: Manifest[] }> {
    return this.call('POST', `groups/${enc(group)}/test-failover`, body) as Promise<{ vms: Manifest[] }>;
  }

  groupTestFailoverCleanup(group: string): Promise<{ vms: { vm: string; removed: string[] }[] }> {
    return this.call('POST', `groups/${enc(group)}/test-failover-cleanup`, {}) as Promise<{
      vms: { vm: string; removed: string[] }[];
    }>;
  }

  /**
   * One request; resolves with the parsed 2xx body, rejects with a {@link ControlApiError}. POST and
   * PUT always carry a JSON body (`{}` if none is given): the processor takes nothing else.
   */
  call(method: string, rel: string, body?: unknown): Promise<unknown> {
    const url = new URL(rel, this.base);
    const sendsBody = body !== undefined || method === 'POST' || method === 'PUT';
    const payload = sendsBody ? Buffer.from(JSON.stringify(body ?? {})) : undefined;
    const where = `${method} ${url.pathname}`;
    return new Promise((resolve, reject) => {
      const req = (url.protocol === 'https:' ? https : http).request(url, {
        method,
        headers: {
          accept: 'application/json',
          ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          // One proof per request: the processor refuses a proof it has seen before.
          ...(this.auth.token !== undefined ? authHeaders(this.auth.token, url, method) : {}),
        },
        ...(this.auth.ca !== undefined && url.protocol === 'https:' ? { ca: this.auth.ca } : {}),
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        reject(
          new ControlApiError(
            1,
            UNREACHABLE,
            `cannot reach the processor at ${this.base.origin} (${err.code ?? err.message}); ${transportHint(err, url)}`,
          ),
        );
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) =>
          reject(
            new ControlApiError(
              1,
              UNREACHABLE,
              `${where}: the answer broke off (${err.message}); the request may or may not have taken effect`,
            ),
          ),
        );
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let doc: unknown;
          try {
            doc = text === '' ? null : JSON.parse(text);
          } catch {
            return reject(
              new ControlApiError(
                1,
                UNREACHABLE,
                `${where}: the processor answered ${res.statusCode ?? '?'} with a body that is not JSON; is ${this.base.origin} a processor?`,
              ),
            );
          }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) return resolve(doc);
          const err = refusal(doc);
          if (err !== undefined) return reject(new ControlApiError(2, err.code, err.message));
          // A 404 without a code is a processor that predates this endpoint, not a refusal of it.
          reject(
            new ControlApiError(
              1,
              UNREACHABLE,
              `${where}: the processor answered ${status} without an error code${status === 404 ? '; it may be older than this sr' : ''}`,
            ),
          );
        });
      });
      req.end(payload);
    });
  }
}

/** What to check, by how the connection failed. */
function transportHint(err: NodeJS.ErrnoException, url: URL): string {
  const code = err.code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code))
    return 'its certificate could not be verified: give the CA that signed it with --tls-ca FILE or SR_TLS_CA';
  if (code === 'EPROTO' || code === 'ECONNRESET')
    return url.protocol === 'https:'
      ? 'is it serving https? (sr-processor --tls-cert/--tls-key)'
      : 'if the processor serves TLS (--tls-cert), use an https:// URL';
  return 'check --processor / SR_PROCESSOR_URL and that sr-processor is running';
}

function refusal(doc: unknown): { code: string; message: string } | undefined {
  if (typeof doc !== 'object' || doc === null) return undefined;
  const { code, message } = doc as { code?: unknown; message?: unknown };
  if (typeof code !== 'string' || !/^SR_[A-Z0-9_]+$/.test(code)) return undefined;
  return { code, message: typeof message === 'string' ? message : '' };
}

/** VM and group names are checked by the processor; encoding keeps a hostile one from changing the path. */
function enc(vm: string): string {
  return encodeURIComponent(vm);
}
