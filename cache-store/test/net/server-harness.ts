import fs from 'node:fs/promises';
import type { ServerOptions as TlsServerOptions } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import {
  BatchSchema,
  TokenVerifier,
  createLogger,
  decodeMessage,
  lastLsn,
  type DiskInfo,
  type Logger,
  type ParsedToken,
  type SrError,
  type SourceMode,
} from '@site-recovery/shared';
import { afterEach, expect } from 'vitest';
import { Peer, PROCESSOR_HELLO, agentHello } from '../helpers.js';
import { mint, openPeer, proofFor, request } from './auth-fixture.js';
import { FileStreamStore, type FileStreamStoreOptions } from '../../src/log/file-stream-store.js';
import { CacheStoreServer } from '../../src/net/server.js';
import type { CacheStoreLimits } from '../../src/net/server-options.js';
import type {
  StoredFrame,
  StreamLog,
  StreamLogStats,
  StreamLogWatcher,
  StreamStore,
} from '../../src/log/stream-log.js';

export interface StatusBody {
  vms: Record<string, unknown>[];
  trackedVms: number;
  maxVms: number;
  damaged?: { vm: string; generation?: string; error: string }[];
  refusedConnections: number;
  authentication: boolean;
  tls: boolean;
}

export interface RunningServer {
  readonly server: CacheStoreServer;
  readonly store: StreamStore;
  readonly dataDir: string;
  /** ws:// or (with TLS) wss:// */
  readonly url: string;
  /** The secret tokens are signed with, when the server checks them. */
  readonly secret?: Buffer;
  /** A processor token for `secret`, which `status()` uses. */
  readonly processorToken?: ParsedToken;
  /** The CA clients verify a TLS server with. */
  readonly ca?: Buffer;
  /** `GET /status` (with the processor token when there is one). */
  status(): Promise<StatusBody>;
  /** A plain HTTP(S) request to the server, over a real socket; with a fresh proof of `token`. */
  http(path: string, method?: string, token?: ParsedToken): Promise<{ status: number; body: unknown }>;
  stop(): Promise<void>;
}

/** Authentication of a test server: its secret and revocation file, as `--auth-secret-file` gives. */
export interface ServerAuth {
  readonly secret: Buffer;
  readonly revokedTokensFile?: string;
}

const log = createLogger('cache-store-test', process.env['SR_TEST_LOG_LEVEL'] ?? 'silent');

/** A cache-store in this process on a free loopback port, over a file store in `dataDir` (default: fresh). */
export async function startServer(
  o: {
    dataDir?: string;
    store?: FileStreamStoreOptions;
    limits?: Partial<CacheStoreLimits>;
    wrap?: (s: StreamStore) => StreamStore;
    log?: Logger;
    /** Check tokens signed with this secret (absent: no authentication). */
    auth?: ServerAuth;
    /** Serve TLS only; `ca` is what clients verify it with. */
    tls?: { server: TlsServerOptions; ca: Buffer };
  } = {},
): Promise<RunningServer> {
  const dataDir = o.dataDir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-server-')));
  const logger = o.log ?? log;
  const file = await FileStreamStore.open(dataDir, { log: logger, ...o.store });
  const store = o.wrap ? o.wrap(file) : file;
  const verifier =
    o.auth !== undefined
      ? new TokenVerifier({
          secret: o.auth.secret,
          log: logger,
          ...(o.auth.revokedTokensFile !== undefined ? { revokedTokensFile: o.auth.revokedTokensFile } : {}),
        })
      : undefined;
  const server = await CacheStoreServer.start({
    store,
    log: logger,
    host: '127.0.0.1',
    port: 0,
    limits: o.limits ?? {},
    ...(verifier !== undefined ? { verifier } : {}),
    ...(o.tls !== undefined ? { tls: o.tls.server } : {}),
  });
  const ca = o.tls?.ca;
  const base = `${o.tls !== undefined ? 'https' : 'http'}://127.0.0.1:${server.address.port}`;
  const processorToken = o.auth !== undefined ? mint(o.auth.secret, { role: 'processor' }) : undefined;
  const http = (p: string, method = 'GET', token?: ParsedToken): Promise<{ status: number; body: unknown }> =>
    request(base, p, { method, ...(token !== undefined ? { token } : {}), ...(ca !== undefined ? { ca } : {}) });
  return {
    server,
    store,
    dataDir,
    url: `${o.tls !== undefined ? 'wss' : 'ws'}://127.0.0.1:${server.address.port}/`,
    ...(o.auth !== undefined ? { secret: o.auth.secret } : {}),
    ...(processorToken !== undefined ? { processorToken } : {}),
    ...(ca !== undefined ? { ca } : {}),
    status: async () => {
      const r = await http('/status', 'GET', processorToken);
      if (r.status !== 200) throw new Error(`GET /status answered ${r.status}: ${JSON.stringify(r.body)}`);
      return r.body as StatusBody;
    },
    http,
    stop: async () => {
      await server.close();
      verifier?.close();
      await store.close();
    },
  };
}

/** What a test file uses to start servers and peers; everything is stopped after each test. */
export interface ServerFixture {
  server: (o?: Parameters<typeof startServer>[0]) => Promise<RunningServer>;
  /**
   * A WebSocket connection that has said nothing yet; with a fresh proof of `token` if given (on a
   * server that checks tokens, none means no credential).
   */
  connect: (s: RunningServer, o?: { autoPong?: boolean; token?: ParsedToken }) => Promise<Peer>;
  /** An agent connection that said hello and got its welcome (with its VM's token when tokens are checked). */
  agent: (s: RunningServer, vm?: string, generation?: string) => Promise<{ peer: Peer; durableLsn: number }>;
  /** A processor connection that said hello and got the first `vms`. */
  processor: (s: RunningServer) => Promise<{ peer: Peer; vms: VmRow[] }>;
}

export interface VmRow {
  vm: string;
  generation: string;
  firstLsn: number;
  lastLsn: number;
}

/** Registers the cleanup (afterEach) of the file calling it. */
export function useServers(): ServerFixture {
  const running: RunningServer[] = [];
  const peers: Peer[] = [];
  afterEach(async () => {
    peers.splice(0).forEach((p) => p.close());
    for (const s of running.splice(0)) {
      await s.stop();
      await fs.rm(s.dataDir, { recursive: true, force: true });
    }
  });
  const connect = async (s: RunningServer, o: { autoPong?: boolean; token?: ParsedToken } = {}): Promise<Peer> => {
    const p =
      o.token === undefined && s.ca === undefined
        ? await Peer.open(s.url, o)
        : await openPeer(s.url, {
            ...(o.autoPong !== undefined ? { autoPong: o.autoPong } : {}),
            ...(o.token !== undefined ? { headers: proofFor(o.token, s.url) } : {}),
            ...(s.ca !== undefined ? { ca: s.ca } : {}),
          });
    peers.push(p);
    return p;
  };
  const tokenFor = (s: RunningServer, role: 'agent' | 'processor', vm?: string): { token?: ParsedToken } =>
    s.secret === undefined ? {} : { token: mint(s.secret, { role, ...(vm !== undefined ? { vm } : {}) }) };
  return {
    server: async (o = {}) => {
      const s = await startServer(o);
      running.push(s);
      return s;
    },
    connect,
    agent: async (s, vm = 'vm1', generation = 'g1') => {
      const peer = await connect(s, tokenFor(s, 'agent', vm));
      peer.send(agentHello(vm, generation));
      const w = await peer.expect('welcome');
      return { peer, durableLsn: w.durableLsn };
    },
    processor: async (s) => {
      const peer = await connect(s, tokenFor(s, 'processor'));
      peer.send(PROCESSOR_HELLO);
      const m = await peer.expect('vms');
      return { peer, vms: m.vms };
    },
  };
}

/** Expects an error message with `code`, then a close other than normal; returns the message and close code. */
export async function expectError(p: Peer, code: string): Promise<string> {
  const m = await p.expect('error');
  expect(m.code).toBe(code);
  const closed = await p.closed;
  expect(closed.code).not.toBe(1000);
  return m.message;
}

/** Receives batches until one reaches `last`; returns them as raw frames. */
export async function receiveThrough(p: Peer, last: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  let reached = 0;
  while (reached < last) {
    const raw = await p.recvRaw();
    reached = lastLsn(decodeMessage(raw, BatchSchema));
    out.push(raw);
  }
  return out;
}

/**
 * A store whose logs report durability only when the test opens the gate: shows that the server
 * acknowledges what the log calls durable and nothing before.
 */
export class GatedStore implements StreamStore {
  private readonly wrapped = new Map<StreamLog, GatedLog>();
  gateOpen = false;

  constructor(private readonly inner: StreamStore) {}

  private wrap(l: StreamLog): GatedLog {
    let g = this.wrapped.get(l);
    if (g === undefined) {
      g = new GatedLog(l, this);
      this.wrapped.set(l, g);
    }
    return g;
  }

  open(): void {
    this.gateOpen = true;
    for (const g of this.wrapped.values()) g.flush();
  }

  logs(): readonly StreamLog[] {
    return this.inner.logs().map((l) => this.wrap(l));
  }

  get(vm: string): StreamLog | undefined {
    const l = this.inner.get(vm);
    return l && this.wrap(l);
  }

  damaged(): ReturnType<StreamStore['damaged']> {
    return this.inner.damaged();
  }

  async openGeneration(vm: string, generation: string, disks: readonly DiskInfo[]): Promise<StreamLog> {
    return this.wrap(await this.inner.openGeneration(vm, generation, disks));
  }

  checkWritable(): Promise<SrError | undefined> {
    return this.inner.checkWritable();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

class GatedLog implements StreamLog {
  private readonly watchers = new Set<StreamLogWatcher>();
  private held: { frames: readonly StoredFrame[]; lsn: number }[] = [];
  private durable: number;

  constructor(
    private readonly inner: StreamLog,
    private readonly gate: GatedStore,
  ) {
    this.durable = inner.durableLsn;
    inner.watch({
      durable: (frames, lsn) => {
        this.held.push({ frames, lsn });
        if (gate.gateOpen) this.flush();
      },
      failed: (err: SrError) => this.watchers.forEach((w) => w.failed(err)),
    });
  }

  flush(): void {
    const held = this.held;
    this.held = [];
    for (const h of held) {
      this.durable = h.lsn;
      this.watchers.forEach((w) => w.durable(h.frames, h.lsn));
    }
  }

  get vm(): string {
    return this.inner.vm;
  }
  get generation(): string {
    return this.inner.generation;
  }
  get disks(): readonly DiskInfo[] {
    return this.inner.disks;
  }
  get firstLsn(): number {
    return this.inner.firstLsn;
  }
  get appendedLsn(): number {
    return this.inner.appendedLsn;
  }
  get durableLsn(): number {
    return this.durable;
  }
  get appliedLsn(): number {
    return this.inner.appliedLsn;
  }
  get pendingBytes(): number {
    return this.inner.pendingBytes;
  }
  get group(): string | undefined {
    return this.inner.group;
  }
  setGroup(group: string | undefined): Promise<void> {
    return this.inner.setGroup(group);
  }
  get mode(): SourceMode | undefined {
    return this.inner.mode;
  }
  setMode(mode: SourceMode | undefined): Promise<void> {
    return this.inner.setMode(mode);
  }
  append(frame: StoredFrame): void {
    this.inner.append(frame);
  }
  sync(): Promise<number> {
    return this.inner.sync();
  }
  resume(): Promise<number> {
    return this.inner.resume();
  }
  read(from: number): AsyncIterable<StoredFrame> {
    return this.inner.read(from);
  }
  release(lsn: number): Promise<void> {
    return this.inner.release(lsn);
  }
  watch(watcher: StreamLogWatcher): () => void {
    this.watchers.add(watcher);
    return () => this.watchers.delete(watcher);
  }
  stats(): StreamLogStats {
    return { ...this.inner.stats(), durableLsn: this.durable };
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
