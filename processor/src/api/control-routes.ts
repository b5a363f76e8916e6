import { ID_PATTERN, JsonReply, type Route, type RouteRequest } from '@site-recovery/shared';
import type { HealthReport } from '../health.js';
import type { AuditAction, AuditLog, AuditSubject } from './audit-log.js';
import type { ControlRoutes } from './control-server.js';
import { httpError } from './error-codes.js';

/** What the control API acts on (the processor gives it these). */
export interface ControlApiTarget {
  health(): HealthReport;
  status(): unknown;
  points(vm: string): unknown;
  config(vm: string): Promise<unknown>;
  putConfig(vm: string, body: unknown): Promise<unknown>;
  failover(vm: string, body: unknown): Promise<unknown>;
  testFailover(vm: string, body: unknown): Promise<unknown>;
  cleanupTestFailover(vm: string): Promise<unknown>;
  commit(vm: string): Promise<unknown>;
  readonly groups: GroupApiTarget;
}

/** What the control API does with replication groups. */
export interface GroupApiTarget {
  /** The group's members now (for the audit log; none for an unknown group). */
  members(group: string): string[];
  config(group: string): unknown;
  putConfig(group: string, body: unknown): Promise<unknown>;
  points(group: string): unknown;
  failover(group: string, body: unknown): Promise<unknown>;
  testFailover(group: string, body: unknown): Promise<unknown>;
  cleanupTestFailover(group: string): Promise<unknown>;
}

/**
 * The control API's routes. Each one that changes something is audited (who, what, which VM or
 * group and its members, how it ended) before it is answered; reads are not, so polling `sr status` does not fill the log.
 */
export function controlRoutes(t: ControlApiTarget, audit: AuditLog | undefined): ControlRoutes {
  const vmOf = (req: RouteRequest): string => req.params['vm']!;
  const groupOf = (req: RouteRequest): string => req.params['group']!;
  const g = t.groups;
  /** What an audited action names: the VM, or the group and its members. */
  const onVm = (req: RouteRequest): AuditSubject => ({ vm: safeId(vmOf(req)) });
  const onGroup = (req: RouteRequest): AuditSubject => {
    const group = groupOf(req);
    return { group: safeId(group), members: ID_PATTERN.test(group) ? g.members(group) : [] };
  };
  const act = (
    action: AuditAction,
    method: 'POST' | 'PUT',
    path: string,
    run: (req: RouteRequest) => unknown,
    subject = onVm,
  ): Route => ({ method, path, handler: audited(action, audit, subject, run) });
  const actOnGroup = (
    action: AuditAction,
    method: 'POST' | 'PUT',
    path: string,
    run: (req: RouteRequest) => unknown,
  ): Route => act(action, method, path, run, onGroup);
  const health: Route = {
    method: 'GET',
    path: '/health',
    handler: () => {
      const h = t.health();
      return h.ok ? h : new JsonReply(503, h);
    },
  };
  const bareHealth: Route = {
    method: 'GET',
    path: '/health',
    handler: () => (t.health().ok ? { ok: true } : new JsonReply(503, { ok: false })),
  };
  const routes: Route[] = [
    { method: 'GET', path: '/status', handler: () => t.status() },
    { method: 'GET', path: '/vms/:vm/points', handler: (req) => t.points(vmOf(req)) },
    { method: 'GET', path: '/vms/:vm/config', handler: (req) => t.config(vmOf(req)) },
    act('configure', 'PUT', '/vms/:vm/config', (req) => t.putConfig(vmOf(req), req.body)),
    act('failover', 'POST', '/vms/:vm/failover', (req) => t.failover(vmOf(req), req.body)),
    act('test-failover', 'POST', '/vms/:vm/test-failover', (req) => t.testFailover(vmOf(req), req.body)),
    act('test-failover-cleanup', 'POST', '/vms/:vm/test-failover-cleanup', (req) => t.cleanupTestFailover(vmOf(req))),
    act('commit', 'POST', '/vms/:vm/commit', (req) => t.commit(vmOf(req))),
    { method: 'GET', path: '/groups/:group/config', handler: (req) => g.config(groupOf(req)) },
    { method: 'GET', path: '/groups/:group/points', handler: (req) => g.points(groupOf(req)) },
    actOnGroup('configure-group', 'PUT', '/groups/:group/config', (req) => g.putConfig(groupOf(req), req.body)),
    actOnGroup('group-failover', 'POST', '/groups/:group/failover', (req) => g.failover(groupOf(req), req.body)),
    actOnGroup('group-test-failover', 'POST', '/groups/:group/test-failover', (req) =>
      g.testFailover(groupOf(req), req.body),
    ),
    actOnGroup('group-test-failover-cleanup', 'POST', '/groups/:group/test-failover-cleanup', (req) =>
      g.cleanupTestFailover(groupOf(req)),
    ),
  ];
  return { routes, health, bareHealth };
}

/** A name that is no id is refused by the handler; the log keeps a bounded, quoted copy. */
function safeId(name: string): string {
  return ID_PATTERN.test(name) ? name : JSON.stringify(name.slice(0, 80));
}

function audited(
  action: AuditAction,
  audit: AuditLog | undefined,
  subject: (req: RouteRequest) => AuditSubject,
  run: (req: RouteRequest) => unknown,
): (req: RouteRequest) => Promise<unknown> {
  return async (req) => {
    // Members as they were when the action was asked for (a failover changes nothing of them).
    const base = { action, ...subject(req), caller: req.caller };
    let result: unknown;
    try {
      result = await run(req);
    } catch (err) {
      const { status, body } = httpError(err);
      await audit?.action({ ...base, outcome: status < 500 ? 'refused' : 'failed', code: body.code });
      throw err;
    }
    await audit?.action({ ...base, outcome: 'ok' });
    return result;
  };
}
