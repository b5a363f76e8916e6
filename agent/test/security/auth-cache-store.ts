import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  AUTH_HEADER,
  AgentHelloSchema,
  PROTOCOL_VERSION,
  TokenVerifier,
  checkRequest,
  createLogger,
  decodeMessage,
  encodeMessage,
  readTlsServerFiles,
  refuseUpgrade,
  requestTarget,
  type AgentHello,
  type AuthResult,
  type RequestTarget,
} from '@site-recovery/shared';

/** One upgrade request as the server saw it, and what its verifier said. */
export interface SeenUpgrade {
  readonly header: string | undefined;
  readonly target: RequestTarget;
  readonly result: AuthResult;
}

export interface AuthCacheStoreOptions {
  /** The secret agent tokens are checked against (the cache-store's). */
  readonly secret: Buffer;
  readonly revokedTokensFile?: string;
  /** Serve wss:// with this certificate and key (PEM files). */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
}

/**
 * The agent's side of the cache-store's upgrade check, on a loopback port chosen at run time: a real
 * WebSocket server that checks each upgrade's proof with the shared {@link TokenVerifier} (as the
 * cache-store does) before any frame, answers a refusal with 401 and `{code, message}`, and welcomes
 * an accepted agent at LSN 0. It records every upgrade, so tests can read the header the agent sent
 * and replay it. A stand-in for the cache-store because these tests are about the agent: how it
 * proves its token, reacts to refusals, and verifies TLS.
 */
export class AuthCacheStore {
  readonly upgrades: SeenUpgrade[] = [];
  readonly hellos: AgentHello[] = [];
  readonly sockets: WebSocket[] = [];
  readonly verifier: TokenVerifier;
  /** TLS handshakes that failed (a client that would not trust the certificate). */
  tlsErrors = 0;
  /** While set, every hello is answered with an SR_AUTH error carrying this message, then closed. */
  helloRefusal: string | undefined;

  private constructor(
    private readonly server: http.Server,
    private readonly wss: WebSocketServer,
    o: AuthCacheStoreOptions,
    readonly url: string,
  ) {
    this.verifier = new TokenVerifier({
      secret: o.secret,
      log: createLogger('auth-cache-store', process.env['SR_LOG_LEVEL'] ?? 'silent'),
      ...(o.revokedTokensFile !== undefined ? { revokedTokensFile: o.revokedTokensFile } : {}),
    });
    server.on('tlsClientError', () => this.tlsErrors++);
    server.on('upgrade', (req: http.IncomingMessage, socket, head) => {
      const header = req.headers[AUTH_HEADER];
      const result = checkRequest(this.verifier, req, ['agent']);
      this.upgrades.push({ header: Array.isArray(header) ? header[0] : header, target: requestTarget(req), result });
      if (!result.ok) return refuseUpgrade(socket, 401, result.code, result.message);
      wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, result.claims.vm));
    });
  }

  static async start(o: AuthCacheStoreOptions): Promise<AuthCacheStore> {
    const tls = o.tls !== undefined ? readTlsServerFiles(o.tls.certFile, o.tls.keyFile) : undefined;
    const server = tls !== undefined ? https.createServer(tls) : http.createServer();
    server.on('request', (_req, res: http.ServerResponse) => res.writeHead(426).end());
    const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const { port } = server.address() as AddressInfo;
    return new AuthCacheStore(server, wss, o, `${tls !== undefined ? 'wss' : 'ws'}://127.0.0.1:${port}/`);
  }

  /** Upgrades whose proof the verifier accepted. */
  get accepted(): SeenUpgrade[] {
    return this.upgrades.filter((u) => u.result.ok);
  }

  /** Upgrades refused, with the verifier's reasons. */
  get refused(): SeenUpgrade[] {
    return this.upgrades.filter((u) => !u.result.ok);
  }

  private accept(ws: WebSocket, tokenVm: string | undefined): void {
    this.sockets.push(ws);
    ws.once('message', (data: Buffer) => {
      const hello = decodeMessage(data, AgentHelloSchema);
      this.hellos.push(hello);
      const refusal = hello.vm !== tokenVm ? `this token is not for VM ${hello.vm}` : this.helloRefusal;
      if (refusal !== undefined) {
        ws.send(encodeMessage({ t: 'error', code: 'SR_AUTH', message: refusal }));
        ws.close();
        return;
      }
      ws.send(encodeMessage({ t: 'welcome', v: PROTOCOL_VERSION, durableLsn: 0 }));
    });
  }

  async close(): Promise<void> {
    this.verifier.close();
    for (const ws of this.sockets) ws.terminate();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
