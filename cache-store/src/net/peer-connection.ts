import {
  ErrorCode,
  HelloSchema,
  SerialQueue,
  SrError,
  decodeMessage,
  encodeMessage,
  type AgentHello,
  type Logger,
  type ProcessorHello,
} from '@site-recovery/shared';
import type { Duplex } from 'node:stream';
import { WebSocket, type RawData } from 'ws';
import { checkHello, type PeerCredential } from './auth.js';
import type { CacheStoreLimits } from './server-options.js';

/** What a connection becomes once its hello names its role. */
export interface RoleSession {
  /** Sets the session up (may open storage); messages wait until it resolves. */
  start(): Promise<void>;
  /**
   * One message after the hello. Throwing (or rejecting) reports the error to the peer and closes; a
   * returned promise holds back the messages after it until it settles.
   */
  onMessage(frame: Buffer): void | Promise<void>;
  /** The connection is gone; release what the session holds. Called once. */
  closed(): void;
}

/** Close codes sent with the close frame; the error message before it carries the stable code. */
export const CloseCode = {
  GOING_AWAY: 1001,
  PEER_ERROR: 1008,
  SERVER_ERROR: 1011,
  /** Over `maxConnections`. */
  TRY_AGAIN_LATER: 1013,
  /** A newer connection took over the VM's stream. */
  REPLACED: 4001,
} as const;

/** Codes that mean the server, not the peer, failed. */
const SERVER_SIDE = new Set<string>([
  ErrorCode.IO,
  ErrorCode.NO_SPACE,
  ErrorCode.JOURNAL_CORRUPT,
  ErrorCode.SHUTTING_DOWN,
  'SR_INTERNAL',
]);
const MAX_ERROR_MESSAGE = 4096;

/**
 * One WebSocket peer: checks the hello, hands the connection to the session for its role, feeds it
 * the following messages one at a time in arrival order, and turns anything thrown into an error
 * message with a stable code followed by a close. Nothing a peer sends can throw past this class.
 */
export class PeerConnection {
  private session: RoleSession | undefined;
  /** Messages are handled in order; the hello's asynchronous start holds back the ones after it. */
  private readonly messages = new SerialQueue();
  private isClosed = false;
  private helloTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private alive = true;
  private bufferedAtPing = 0;
  /** Bytes read from the socket before the first message arrived (the hello, or what stands for it). */
  private preHelloBytes = 0;
  private helloArrived = false;
  private readonly countPreHello = (chunk: Buffer): void => {
    if (!this.helloArrived) this.notePreHello(chunk.length);
  };

  constructor(
    readonly ws: WebSocket,
    /** The upgraded socket, to count bytes as they arrive rather than once a whole message is buffered. */
    private readonly socket: Duplex,
    readonly remote: string,
    /** Who the upgrade found this peer to be; the hello must agree with it. */
    readonly credential: PeerCredential,
    private readonly limits: CacheStoreLimits,
    readonly log: Logger,
    private readonly becomeRole: (conn: PeerConnection, hello: AgentHello | ProcessorHello) => RoleSession,
    private readonly onGone: (conn: PeerConnection) => void,
  ) {
    // ws reads the socket first (its listener was added at the upgrade), so a chunk that completes
    // the hello has already ended this count when ours runs: what follows the hello is not counted.
    socket.on('data', this.countPreHello);
    ws.on('message', (data, isBinary) => {
      this.alive = true;
      // The listener is still called for the chunk being read (emit copies its listeners): the flag stops it.
      this.helloArrived = true;
      this.socket.off('data', this.countPreHello);
      this.receive(data, isBinary);
    });
    ws.on('close', () => this.gone());
    // ws reports a bad frame (oversized, unmasked, bad opcode) here and closes with its own code.
    ws.on('error', (err) => this.log.warn({ remote, err: err.message }, 'websocket error'));
    ws.on('pong', () => (this.alive = true));
    this.helloTimer = setTimeout(
      () => this.fail(new SrError(ErrorCode.PROTOCOL, `no hello within ${limits.helloTimeoutMs} ms`)),
      limits.helloTimeoutMs,
    );
    this.helloTimer.unref();
    if (limits.pingIntervalMs > 0) {
      this.pingTimer = setInterval(() => this.keepAlive(), limits.pingIntervalMs);
      this.pingTimer.unref();
    }
  }

  get closed(): boolean {
    return this.isClosed;
  }

  send(message: object): void {
    if (!this.isClosed && this.ws.readyState === WebSocket.OPEN) this.ws.send(encodeMessage(message), { binary: true });
  }

  /** Reports `err` to the peer as `{t:'error', code, message}` and closes. */
  fail(err: unknown): void {
    if (this.isClosed) return;
    const code = err instanceof SrError ? err.code : 'SR_INTERNAL';
    const message = (err instanceof Error ? err.message : String(err)).slice(0, MAX_ERROR_MESSAGE);
    const serverSide = SERVER_SIDE.has(code);
    if (err instanceof SrError)
      this.log[serverSide ? 'error' : 'warn']({ remote: this.remote, code, err: message }, 'closing connection');
    else this.log.error({ remote: this.remote, err }, 'internal error; closing connection');
    this.send({ t: 'error', code, message });
    this.close(serverSide ? CloseCode.SERVER_ERROR : CloseCode.PEER_ERROR, code);
  }

  /** Closes without an error message (shutdown, replaced by a newer connection). */
  close(code: number, reason: string): void {
    if (this.isClosed) return;
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING)
      this.ws.close(code, reason.slice(0, 120));
    // A socket paused (session starting, flow control) would never read the peer's close reply, and
    // the peer would see its connection end only at ws's 30 s close timeout.
    if (this.ws.isPaused) this.ws.resume();
    this.gone();
  }

  private receive(data: RawData, isBinary: boolean): void {
    if (this.isClosed) return;
    // The failure is reported inside the task, so the next message already finds the connection closed.
    void this.messages.run(async () => {
      if (this.isClosed) return;
      try {
        await this.handle(data, isBinary);
      } catch (err) {
        this.fail(err);
      }
    });
  }

  private async handle(data: RawData, isBinary: boolean): Promise<void> {
    if (!isBinary || !Buffer.isBuffer(data))
      throw new SrError(ErrorCode.PROTOCOL, 'only binary messages are part of the protocol');
    if (this.session !== undefined) return this.session.onMessage(data);
    const hello = decodeMessage(data, HelloSchema);
    checkHello(this.credential, hello);
    clearTimeout(this.helloTimer);
    this.session = this.becomeRole(this, hello);
    this.log.info(
      {
        remote: this.remote,
        role: hello.role,
        ...(hello.role === 'agent' ? { vm: hello.vm, generation: hello.generation } : {}),
      },
      'hello',
    );
    // Messages that arrive before the session is ready would pile up in the chain: stop reading.
    this.ws.pause();
    try {
      await this.session.start();
    } finally {
      if (!this.isClosed) this.ws.resume();
    }
  }

  /**
   * Nothing larger than a hello is taken before the hello: past `maxHelloBytes` the peer gets
   * SR_LIMIT and the socket is read no further (ws would otherwise buffer up to maxFrameBytes).
   */
  private notePreHello(bytes: number): void {
    this.preHelloBytes += bytes;
    if (this.preHelloBytes <= this.limits.maxHelloBytes || this.isClosed) return;
    this.socket.off('data', this.countPreHello);
    this.fail(
      new SrError(
        ErrorCode.LIMIT,
        `more than maxHelloBytes (${this.limits.maxHelloBytes}) sent before the hello; the hello comes first`,
      ),
    );
    // ws would buffer the rest of the message up to maxFrameBytes: the socket is read on into
    // nothing (so the peer's close reaches us and the socket goes at once), after the error and
    // close frames go out. ws's close timeout still ends a peer that never stops sending.
    this.socket.removeAllListeners('data');
    this.socket.on('data', () => undefined);
    this.socket.end();
  }

  private keepAlive(): void {
    // A connection paused for flow control cannot read its pongs, and on a slow link a ping or pong
    // may wait behind megabytes of batches: a peer still moving data is not dead for that.
    const buffered = this.ws.bufferedAmount;
    if (this.ws.isPaused || buffered < this.bufferedAtPing) this.alive = true;
    this.bufferedAtPing = buffered;
    if (!this.alive) {
      this.log.warn({ remote: this.remote }, 'peer did not answer a ping; dropping the connection');
      this.ws.terminate();
      this.gone();
      return;
    }
    this.alive = false;
    if (this.ws.readyState === WebSocket.OPEN) this.ws.ping();
  }

  private gone(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    clearTimeout(this.helloTimer);
    clearInterval(this.pingTimer);
    try {
      this.session?.closed();
    } finally {
      this.onGone(this);
    }
  }
}
