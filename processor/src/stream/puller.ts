import type http from 'node:http';
import WebSocket from 'ws';
import {
  DEFAULT_WIRE_LIMITS,
  ErrorCode,
  MessageSchema,
  PROTOCOL_VERSION,
  SrError,
  decodeBatch,
  decodeMessage,
  type Applied,
  type Batch,
  type ErrorMessage,
  type Logger,
  type ProcessorHello,
  type Stream,
  type Policy,
  type SourceMode,
  type Subscribe,
  type SumsRequest,
  type VmInfo,
  type WireLimits,
  authHeaders,
} from '@site-recovery/shared';
import { Backoff } from '@site-recovery/shared';
import { asStorageError } from './storage-error.js';
import type { VmReplication } from './vm-replication.js';
import { Connection, isPeerFault, type AgentPolicy } from './puller-connection.js';
import { DEFAULT_PULLER, type PullerOptions } from './puller-options.js';
import { SumsReplies } from './sums-reply.js';
import { readUpgradeRefusal } from './upgrade-refusal.js';
import type { ErrorInfo } from './vm-status.js';

/** The VMs the puller feeds. */
export interface VmDirectory {
  get(vm: string): VmReplication | undefined;
  /** Adds a VM the cache-store lists; `undefined` when no more are allowed. */
  add(vm: string): VmReplication | undefined;
  /** The VM's policy to relay to its agent (its app-consistent frequency, its group's multi-VM one). */
  policy(vm: string): Promise<AgentPolicy>;
  /** The cache-store lists the VM in `group` (its agent's hello), or in none. */
  noteGroup(vm: string, group: string | undefined): Promise<void>;
  /** The cache-store lists the VM with its agent's mode (absent in the hello: `nbd`). */
  noteMode(vm: string, mode: SourceMode): Promise<void>;
}

export interface PullerStatus {
  readonly url: string;
  readonly connected: boolean;
  readonly reconnects: number;
  readonly lastError?: ErrorInfo;
}

/**
 * The processor's side of the replication protocol: one WebSocket to the cache-store, redialled with
 * backoff. Messages are handled one at a time in arrival order; a batch is decoded and verified
 * completely before any of it is applied, and anything wrong drops the connection, after which every
 * VM is subscribed again from the position its replica holds.
 */
export class Puller {
  private conn: Connection | undefined;
  private chain: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private reconnects = 0;
  private lastError: ErrorInfo | undefined;
  /** Since when no connection has got as far as the VM list (`undefined` while one has). */
  private downSince: number | undefined;
  private readonly backoff: Backoff;
  private readonly limits: WireLimits;
  private readonly maxQueued: number;

  constructor(
    private readonly o: PullerOptions,
    private readonly vms: VmDirectory,
    private readonly log: Logger,
  ) {
    this.backoff = new Backoff(o.backoff);
    this.limits = o.limits ?? DEFAULT_WIRE_LIMITS;
    this.maxQueued = o.maxQueuedBytes ?? DEFAULT_PULLER.maxQueuedBytes;
  }

  start(): void {
    this.downSince = Date.now();
    this.connect();
  }

  /**
   * Since when (ms since the epoch) the cache-store has been out of reach: no connection has got as
   * far as the VM list since then. `undefined` while one has, and before `start`.
   */
  unreachableSince(): number | undefined {
    return this.downSince;
  }

  status(): PullerStatus {
    const c = this.conn;
    return {
      url: this.o.url,
      connected: c !== undefined && !c.closed && c.ws.readyState === WebSocket.OPEN,
      reconnects: this.reconnects,
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
    };
  }

  /** Sends `applied` if `vm` is streaming `generation` on the current connection. */
  confirm(vm: string, generation: string, lsn: number): boolean {
    const c = this.conn;
    if (c === undefined || c.closed || c.streams.get(vm)?.generation !== generation) return false;
    return c.send({ t: 'applied', vm, generation, lsn } satisfies Applied);
  }

  /** Relays a VM's policy to its agent through the cache-store; false when not connected. */
  sendPolicy(vm: string, policy: AgentPolicy): boolean {
    const c = this.conn;
    return c !== undefined && c.send({ ...policy, t: 'policy', vm } satisfies Policy);
  }

  /**
   * Subscribes `vm` again on the current connection from the position its replica gives (after a
   * storage pause, or once a refused generation can be taken): the cache-store replaces the
   * subscription and sends the stream again. Without a connection the next one subscribes it anyway.
   */
  resubscribe(vm: string): void {
    this.chain = this.chain.then(async () => {
      const c = this.conn;
      const v = this.vms.get(vm);
      if (c === undefined || c.closed || this.stopped || v === undefined || !v.usable || !c.subscribed.has(vm)) return;
      try {
        const { generation, from } = await v.subscription();
        if (!c.closed && c.send({ t: 'subscribe', vm, generation, from } satisfies Subscribe))
          this.log.info({ vm, generation, from }, 'subscribed again');
      } catch (err) {
        this.fail(c, err, vm);
      }
    });
  }

  /** Drops the current connection (a local fault); the next one resubscribes everything. */
  restart(reason: SrError): void {
    const c = this.conn;
    if (c !== undefined && !c.closed) c.drop(1011, reason.code);
  }

  /** Stops taking messages: the one being handled finishes, the rest are dropped. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.chain;
  }

  /** Closes the connection (after `stop`). */
  async close(): Promise<void> {
    await this.stop();
    const c = this.conn;
    if (c === undefined || c.ws.readyState === WebSocket.CLOSED) return;
    const closed = new Promise<void>((resolve) => c.ws.once('close', () => resolve()));
    c.drop(1001, 'shutting down');
    await closed;
  }

  private connect(): void {
    this.timer = undefined;
    if (this.stopped) return;
    const ws = new WebSocket(this.o.url, {
      perMessageDeflate: false,
      maxPayload: this.limits.maxFrameBytes,
      handshakeTimeout: this.o.connectTimeoutMs ?? DEFAULT_PULLER.connectTimeoutMs,
      // A proof is good for one upgrade only: each dial makes its own.
      ...(this.o.token !== undefined ? { headers: authHeaders(this.o.token, this.o.url) } : {}),
      ...(this.o.ca !== undefined ? { ca: this.o.ca } : {}),
    });
    const c = new Connection(ws);
    c.sums = new SumsReplies({ send: (m) => c.sendFlushed(m) }, this.log, this.o);
    this.conn = c;
    ws.on('unexpected-response', (_req, res) => this.onRefused(c, res));
    ws.on('open', () => {
      this.log.info({ url: this.o.url }, 'connected to cache-store');
      const hello: ProcessorHello = { t: 'hello', v: PROTOCOL_VERSION, role: 'processor' };
      c.send(hello);
      c.startHeartbeat(this.o.heartbeatMs ?? DEFAULT_PULLER.heartbeatMs, () =>
        this.log.warn({ url: this.o.url }, 'cache-store stopped answering pings; reconnecting'),
      );
    });
    ws.on('message', (data, isBinary) => this.receive(c, data, isBinary));
    ws.on('error', (err) => {
      if (c.refused) return;
      this.log.warn({ url: this.o.url, err: err.message }, 'cache-store connection error');
      this.lastError = {
        code: ErrorCode.IO,
        message: `cache-store connection: ${err.message}`,
        at: new Date().toISOString(),
      };
    });
    ws.once('close', (code, reason) => this.onClose(c, code, reason.toString()));
  }

  /**
   * The cache-store answered the upgrade with an HTTP error (401/403: the token is refused): keep its
   * code for status and health, say so once, and redial with backoff (a revoked token may be replaced).
   */
  private onRefused(c: Connection, res: http.IncomingMessage): void {
    c.refused = true;
    c.faulted = true;
    readUpgradeRefusal(res, ({ status, code, message }) => {
      this.lastError = { code, message, at: new Date().toISOString() };
      this.log.error({ url: this.o.url, status, code, err: message }, 'cache-store refused the connection');
      if (c.ws.readyState === WebSocket.CONNECTING) c.ws.terminate();
    });
  }

  private receive(c: Connection, data: WebSocket.RawData, isBinary: boolean): void {
    if (c.closed) return;
    if (!isBinary) {
      this.fail(
        c,
        new SrError(ErrorCode.PROTOCOL, 'text frame from the cache-store; the protocol is binary msgpack'),
        undefined,
      );
      return;
    }
    const frame = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    c.queuedBytes += frame.length;
    if (c.queuedBytes > this.maxQueued && !c.ws.isPaused) c.ws.pause();
    this.chain = this.chain.then(() => this.process(c, frame));
  }

  private async process(c: Connection, frame: Buffer): Promise<void> {
    let vm: string | undefined;
    try {
      if (c.closed || this.stopped) return;
      const m = decodeMessage(frame, MessageSchema);
      switch (m.t) {
        case 'vms':
          return await this.onVms(c, m.vms);
        case 'stream':
          vm = m.vm;
          return await this.onStream(c, m);
        case 'batch':
          vm = m.vm;
          return await this.onBatch(c, m);
        case 'sums-request':
          return this.onSumsRequest(c, m);
        case 'error':
          return this.onPeerError(c, m);
        default:
          throw new SrError(ErrorCode.PROTOCOL, `unexpected "${m.t}" message from the cache-store`);
      }
    } catch (err) {
      this.fail(c, err, vm);
    } finally {
      c.queuedBytes -= frame.length;
      if (c.ws.isPaused && c.queuedBytes <= this.maxQueued / 2) c.ws.resume();
    }
  }

  private async onVms(c: Connection, list: readonly VmInfo[]): Promise<void> {
    c.listed = true;
    this.downSince = undefined;
    for (const info of list) {
      const vm = this.vms.get(info.vm) ?? this.vms.add(info.vm);
      if (vm === undefined) {
        this.log.warn(
          { vm: info.vm, maxVms: this.o.maxVms ?? DEFAULT_PULLER.maxVms },
          'cache-store lists more VMs than allowed; ignoring',
        );
        continue;
      }
      vm.noteCacheStore(info);
      await this.vms.noteGroup(info.vm, info.group);
      // Before anything of the VM is applied on this connection: its points depend on it.
      await this.vms.noteMode(info.vm, info.mode ?? 'nbd');
      if (c.closed) return;
      if (!vm.usable) continue;
      if (c.subscribed.get(info.vm) !== info.generation) {
        const { generation, from } = await vm.subscription();
        if (c.closed) return;
        c.send({ t: 'subscribe', vm: info.vm, generation, from } satisfies Subscribe);
        c.subscribed.set(info.vm, info.generation);
        c.policyGroup.delete(info.vm);
        this.log.info({ vm: info.vm, generation, from }, 'subscribed');
      }
      // On every subscribe, and whenever the VM's group changes: the group's frequency goes with it.
      if (c.policyGroup.get(info.vm) !== (info.group ?? null)) {
        this.sendPolicy(info.vm, await this.vms.policy(info.vm));
        c.policyGroup.set(info.vm, info.group ?? null);
      }
    }
  }

  private async onStream(c: Connection, m: Stream): Promise<void> {
    const vm = this.vms.get(m.vm);
    if (!c.subscribed.has(m.vm) || vm === undefined)
      throw new SrError(ErrorCode.PROTOCOL, `stream for VM "${m.vm}", which this processor did not subscribe`);
    if (m.disks.length > this.limits.maxDisks)
      throw new SrError(
        ErrorCode.LIMIT,
        `stream of ${m.vm} declares ${m.disks.length} disks, more than maxDisks ${this.limits.maxDisks}`,
      );
    await vm.beginStream(m.generation, m.disks);
    c.streams.set(m.vm, { generation: m.generation, disks: m.disks });
    this.log.info({ vm: m.vm, generation: m.generation, from: m.from }, 'stream started');
    c.sums?.streamBegan(vm, m.generation);
  }

  /** The agent asks for the replica's block sums (checksum resync): answered beside the stream. */
  private onSumsRequest(c: Connection, m: SumsRequest): void {
    const vm = this.vms.get(m.vm);
    if (vm === undefined || !c.subscribed.has(m.vm)) {
      this.log.warn({ vm: m.vm }, 'sums request for a VM this processor did not subscribe; ignored');
      return;
    }
    c.sums?.requested(m, vm, c.streams.get(m.vm)?.generation);
  }

  private async onBatch(c: Connection, b: Batch): Promise<void> {
    const stream = c.streams.get(b.vm);
    const vm = this.vms.get(b.vm);
    if (stream === undefined || vm === undefined)
      throw new SrError(ErrorCode.PROTOCOL, `batch for VM "${b.vm}" before its stream began`);
    if (b.generation !== stream.generation) {
      throw new SrError(
        ErrorCode.GENERATION,
        `batch of ${b.vm} belongs to generation ${b.generation}, the stream is ${stream.generation}`,
      );
    }
    // Verifies every record (kinds, bounds, sizes, checksums) before any of them is applied.
    const records = decodeBatch(b, stream.disks, this.limits);
    await vm.applyBatch(b.generation, records, b.progress);
  }

  private onPeerError(c: Connection, m: ErrorMessage): void {
    this.log.error({ code: m.code, err: m.message }, 'cache-store reported an error');
    this.lastError = { code: m.code, message: m.message, at: new Date().toISOString() };
    c.drop(1000, 'peer error');
    c.faulted = true;
  }

  private fail(c: Connection, err: unknown, vmName: string | undefined): void {
    const e = asStorageError(err, 'applying the stream failed');
    const info: ErrorInfo = { code: e.code, message: e.message, at: new Date().toISOString() };
    this.lastError = info;
    const vm = vmName !== undefined ? this.vms.get(vmName) : undefined;
    vm?.recordError(e);
    const peerFault = isPeerFault(e.code);
    this.log.error(
      { vm: vmName, code: e.code, err: e.message },
      peerFault ? 'refused what the cache-store sent; reconnecting' : 'local failure; reconnecting',
    );
    if (peerFault) c.send({ t: 'error', code: e.code, message: e.message.slice(0, 4096) } satisfies ErrorMessage);
    c.drop(peerFault ? 1008 : 1011, e.code);
  }

  private onClose(c: Connection, code: number, reason: string): void {
    c.closed = true;
    c.sums?.close();
    c.stopHeartbeat();
    if (this.conn === c) {
      this.conn = undefined;
      this.downSince ??= Date.now();
    }
    // A connection that got as far as the VM list and was not refused counts as a success.
    if (c.listed && !c.faulted) this.backoff.reset();
    if (this.stopped) return;
    const delay = this.backoff.next();
    this.reconnects++;
    this.log.info({ code, reason, delayMs: delay }, 'cache-store connection closed; reconnecting');
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
