import type https from 'node:https';
import { JsonReply, jsonApi, listenHttp, type HttpListener, type Logger } from '@site-recovery/shared';
import type { AgentStatus } from '../agent-status.js';
import type { AgentHealth } from '../health.js';
import type { WatchAgentStatus } from '../watch/watch-status.js';

export interface StatusSource {
  status(): AgentStatus | WatchAgentStatus;
  health(): AgentHealth;
}

/**
 * The agent's read-only HTTP endpoint: `GET /status` (the agent's status) and `GET /health` (200
 * `{ok: true, ...}` when healthy, 503 `{ok: false, problems: [{code, message}]}` when not, for
 * load balancers and monitors that only look at the status code).
 */
export function serveStatus(
  o: { readonly host: string; readonly port: number; readonly tls?: https.ServerOptions },
  agent: StatusSource,
  log: Logger,
): Promise<HttpListener> {
  const handler = jsonApi(
    [
      { method: 'GET', path: '/status', handler: () => agent.status() },
      {
        method: 'GET',
        path: '/health',
        handler: () => {
          const h = agent.health();
          return h.ok ? h : new JsonReply(503, h);
        },
      },
    ],
    { log, hint: 'try GET /status or GET /health' },
  );
  return listenHttp(o, handler, log);
}
