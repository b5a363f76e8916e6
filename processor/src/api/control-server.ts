import type http from 'node:http';
import type https from 'node:https';
import type { AddressInfo } from 'node:net';
import {
  AUTH_HEADER,
  jsonApi,
  listenHttp,
  type HttpListener,
  type Logger,
  type Route,
  type TokenVerifier,
} from '@site-recovery/shared';
import type { AuditLog } from './audit-log.js';
import { hostAllowList, operatorAuthorizer } from './control-auth.js';
import { httpError } from './error-codes.js';

export type { Route, RouteRequest } from '@site-recovery/shared';

export interface ControlServerOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** Serve HTTPS with these options (key, cert, ...) instead of plain HTTP. */
  readonly tls?: https.ServerOptions;
}

export interface ControlServerLimits {
  /** Largest request body accepted. Default 64 KiB: every request is a small JSON object. */
  readonly maxBodyBytes?: number;
}

/** How the control API guards itself; absent, every route is open to any Host (in-process tests). */
export interface ControlSecurity {
  /** Checks operator tokens; absent, routes are served without a token (--insecure, loopback only). */
  readonly verifier?: TokenVerifier;
  /** Host headers served besides the listen address (`--allowed-hosts`). */
  readonly allowedHosts?: readonly string[];
  /** Where refused credentials are recorded. */
  readonly audit?: AuditLog;
}

/** The routes as served: `/health` is given twice, bare and open, and in full behind the token. */
export interface ControlRoutes {
  readonly routes: readonly Route[];
  /** `GET /health` with every detail (needs the token when a verifier is set). */
  readonly health: Route;
  /** `GET /health` answering `{ok}` only, for anyone. */
  readonly bareHealth: Route;
}

/**
 * The processor's HTTP listener: `/health`, `/status` and the control API the `sr` CLI talks to.
 * JSON in and out (shared/http); a failure is `{code, message}` with a 4xx status for what the caller
 * can fix (see error-codes.ts). With {@link ControlSecurity}, every route but a bare `GET /health`
 * needs an operator token, POST and PUT must be JSON, and a foreign Host header is refused.
 */
export class ControlServer {
  private constructor(private readonly http: HttpListener) {}

  static async listen(
    o: ControlServerOptions & ControlServerLimits,
    r: ControlRoutes,
    log: Logger,
    security?: ControlSecurity,
  ): Promise<ControlServer> {
    // Port 0 is known once bound; the Host check reads it per request.
    let boundPort = o.port;
    const common = {
      log,
      httpError,
      hint: 'try /health, /status or /vms/VM/points',
      ...(o.maxBodyBytes !== undefined ? { maxBodyBytes: o.maxBodyBytes } : {}),
      ...(security !== undefined
        ? {
            allowedHost: hostAllowList(o.host, () => boundPort, security.allowedHosts),
            requireJsonContentType: true,
            ...(security.verifier !== undefined
              ? { authorize: operatorAuthorizer(security.verifier, security.audit) }
              : {}),
          }
        : {}),
    };
    let handler: http.RequestListener;
    if (security?.verifier === undefined) {
      handler = jsonApi([r.health, ...r.routes], common);
    } else {
      // A caller who presents a credential gets the full health report, if the credential holds.
      const open = jsonApi([{ ...r.bareHealth, open: true }, ...r.routes], common);
      const authed = jsonApi([r.health, ...r.routes], common);
      handler = (req, res) => (req.headers[AUTH_HEADER] !== undefined ? authed : open)(req, res);
    }
    const bound = await listenHttp(o, handler, log);
    boundPort = bound.address.port;
    return new ControlServer(bound);
  }

  get address(): AddressInfo {
    return this.http.address;
  }

  /** host:port as bound, IPv6 in brackets. */
  get listen(): string {
    return this.http.listen;
  }

  close(): Promise<void> {
    return this.http.close();
  }
}
