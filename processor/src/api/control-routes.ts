import { ID_PATTERN, JsonReply, type Route, type RouteRequest } from '@site-recovery/shared';
import type { HealthReport } from '../health.js';
import type { AuditAction, AuditLog } from './audit-log.js';
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
}

/**
 * The control API's routes. Each one that changes something is audited (who, what, which VM, how it
 * ended) before it is answered; reads are not, so polling `sr status` does not fill the log.
 */
export function controlRoutes(t: ControlApiTarget, audit: AuditLog | undefined): ControlRoutes {
  const vmOf = (req: RouteRequest): string => req.params['vm']!;
  const act = (
    action: AuditAction,
    method: 'POST' | 'PUT',
    path: string,
    run: (req: RouteRequest) => unknown,
  ): Route => ({
    method,
    path,
    handler: audited(action, audit, run),
  });
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
  ];
  return { routes, health, bareHealth };
}

function audited(
  action: AuditAction,
  audit: AuditLog | undefined,
  run: (req: RouteRequest) => unknown,
): (req: RouteRequest) => Promise<unknown> {
  return async (req) => {
    const name = req.params['vm']!;
    // A name that is no id is refused by the handler; the log keeps a bounded, quoted copy.
    const vm = ID_PATTERN.test(name) ? name : JSON.stringify(name.slice(0, 80));
    const base = { action, vm, caller: req.caller };
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
