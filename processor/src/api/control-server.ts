import type https from 'node:https';
import type { AddressInfo } from 'node:net';
import { jsonApi, listenHttp, type HttpListener, type Logger, type Route } from '@site-recovery/shared';
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

/**
 * The processor's HTTP listener: `/health`, `/status` and the control API the `sr` CLI talks to.
 * JSON in and out (shared/http); a failure is `{code, message}` with a 4xx status for what the caller
 * can fix (see error-codes.ts). Plain or TLS is one option, so authentication can be added without
 * touching the handlers.
 */
export class ControlServer {
  private constructor(private readonly http: HttpListener) {}

  static async listen(
    o: ControlServerOptions & ControlServerLimits,
    routes: readonly Route[],
    log: Logger,
  ): Promise<ControlServer> {
    const handler = jsonApi(routes, {
      log,
      httpError,
      hint: 'try /health, /status or /vms/VM/points',
      ...(o.maxBodyBytes !== undefined ? { maxBodyBytes: o.maxBodyBytes } : {}),
    });
    return new ControlServer(await listenHttp(o, handler, log));
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
