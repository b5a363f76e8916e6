import net from 'node:net';
import { Backoff, ErrorCode, SrError, type Logger } from '@site-recovery/shared';
import type { GroupPeer, PeerLimits } from './group-config.js';
import type { PeerMessage, TermView } from './group-messages.js';
import { PeerLink } from './peer-link.js';

export interface PeerMeshOptions {
  readonly self: string;
  readonly group: string;
  readonly secret: Buffer;
  /** Every member, this one included. */
  readonly peers: readonly GroupPeer[];
  readonly listen: { readonly host: string; readonly port: number };
  readonly limits: PeerLimits;
  readonly log: Logger;
  readonly terms: () => TermView;
  readonly onUp: (vm: string) => void;
  readonly onDown: (vm: string, why: string) => void;
  readonly onMessage: (vm: string, m: PeerMessage) => void;
}

export interface PeerStatus {
  readonly vm: string;
  /** Where this member dials it (or, for a member that dials this one, its --peers address). */
  readonly address: string;
  readonly connected: boolean;
  /** Since when it has been connected, or not connected (the start counts as a disconnection). */
  readonly since: string;
}

export interface AuthFailures {
  readonly count: number;
  readonly last?: { readonly code: string; readonly peer?: string; readonly at: string };
}

interface Dial {
  readonly backoff: Backoff;
  timer: NodeJS.Timeout | undefined;
  /** An outage has been logged; quiet until the peer is reached again. */
  logged: boolean;
}

/**
 * The links of this member to every other member: one TCP connection per pair, dialled by the member
 * whose name sorts first and redialled with backoff when lost, accepted for the others. Only
 * authenticated links count as up; a peer refused at the handshake is logged once per connection
 * with its code and counted.
 */
export class PeerMesh {
  private readonly up = new Map<string, PeerLink>();
  private readonly open = new Set<PeerLink>();
  private readonly since = new Map<string, number>();
  private readonly dials = new Map<string, Dial>();
  private readonly members: ReadonlySet<string>;
  private failures = 0;
  private lastFailure: AuthFailures['last'];
  private closed = false;

  private constructor(
    private readonly o: PeerMeshOptions,
    private readonly server: net.Server,
  ) {
    this.members = new Set(o.peers.map((p) => p.vm));
    const now = Date.now();
    for (const p of o.peers) if (p.vm !== o.self) this.since.set(p.vm, now);
  }

  /** Listens on `listen` and starts dialling the members that sort after this one. */
  static async start(o: PeerMeshOptions): Promise<PeerMesh> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) =>
        reject(
          new SrError(
            ErrorCode.BAD_OPTION,
            `cannot listen for group peers on ${o.listen.host}:${o.listen.port} (${err.message}): ` +
              'choose another --group-listen address or free that port',
          ),
        ),
      );
      server.listen(o.listen.port, o.listen.host, () => resolve());
    });
    const mesh = new PeerMesh(o, server);
    server.on('connection', (socket) => mesh.link(socket, 'acceptor'));
    server.on('error', (err) => o.log.error({ err: err.message }, 'group peer listener failed'));
    for (const p of o.peers) {
      if (p.vm <= o.self) continue;
      mesh.dials.set(p.vm, { backoff: new Backoff(o.limits.redial), timer: undefined, logged: false });
      mesh.dial(p);
    }
    return mesh;
  }

  /** The address the listener is bound to. */
  get address(): net.AddressInfo {
    return this.server.address() as net.AddressInfo;
  }

  isUp(vm: string): boolean {
    return this.up.has(vm);
  }

  /** Members with an authenticated link now. */
  upPeers(): string[] {
    return [...this.up.keys()];
  }

  /** Sends to a member; false when its link is not up. */
  send(vm: string, m: PeerMessage): boolean {
    return this.up.get(vm)?.send(m) ?? false;
  }

  status(): PeerStatus[] {
    return this.o.peers
      .filter((p) => p.vm !== this.o.self)
      .map((p) => ({
        vm: p.vm,
        address: `${p.host.includes(':') ? `[${p.host}]` : p.host}:${p.port}`,
        connected: this.up.has(p.vm),
        since: new Date(this.since.get(p.vm)!).toISOString(),
      }));
  }

  authFailures(): AuthFailures {
    return { count: this.failures, ...(this.lastFailure !== undefined ? { last: this.lastFailure } : {}) };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const d of this.dials.values()) clearTimeout(d.timer);
    for (const l of [...this.open]) l.close('the agent is stopping');
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private dial(p: GroupPeer): void {
    if (this.closed) return;
    const socket = net.connect({ host: p.host, port: p.port });
    this.link(socket, 'dialer', p.vm);
  }

  private redial(vm: string, why: string): void {
    const d = this.dials.get(vm);
    const p = this.o.peers.find((x) => x.vm === vm);
    if (d === undefined || p === undefined || this.closed) return;
    if (!d.logged) {
      d.logged = true;
      this.o.log.info(
        { group: this.o.group, peer: vm, address: `${p.host}:${p.port}`, why },
        'group peer unreachable; redialling',
      );
    }
    clearTimeout(d.timer);
    d.timer = setTimeout(() => this.dial(p), d.backoff.next());
  }

  private link(socket: net.Socket, role: 'dialer' | 'acceptor', expect?: string): void {
    const pending = [...this.open].filter((l) => !l.up).length;
    if (this.closed || (role === 'acceptor' && pending >= this.o.limits.pendingHandshakes)) {
      socket.destroy();
      return;
    }
    const link = new PeerLink({
      socket,
      role,
      self: this.o.self,
      group: this.o.group,
      secret: this.o.secret,
      members: this.members,
      ...(expect !== undefined ? { expect } : {}),
      limits: this.o.limits,
      terms: this.o.terms,
      onUp: (l) => this.onLinkUp(l),
      onMessage: (l, m) => {
        if (this.up.get(l.peer!) === l) this.o.onMessage(l.peer!, m);
      },
      onClose: (l, why) => this.onLinkClosed(l, role, why),
    });
    this.open.add(link);
  }

  private onLinkUp(link: PeerLink): void {
    const vm = link.peer!;
    // A peer that restarted dials again before its old link timed out: the new one replaces it.
    this.up.get(vm)?.close(`replaced by a new connection from ${vm}`);
    this.up.set(vm, link);
    this.since.set(vm, Date.now());
    const d = this.dials.get(vm);
    if (d !== undefined) {
      d.backoff.reset();
      d.logged = false;
    }
    this.o.log.info({ group: this.o.group, peer: vm }, 'group peer connected');
    this.o.onUp(vm);
  }

  private onLinkClosed(
    link: PeerLink,
    role: 'dialer' | 'acceptor',
    why: { refused?: { code: string }; message: string },
  ): void {
    this.open.delete(link);
    const vm = link.peer;
    if (why.refused !== undefined) {
      this.failures++;
      const at = new Date().toISOString();
      this.lastFailure = { code: why.refused.code, ...(vm !== undefined ? { peer: vm } : {}), at };
      this.o.log.warn(
        { group: this.o.group, code: why.refused.code, peer: vm, remote: link.remote },
        `group peer refused: ${why.message}`,
      );
    }
    if (vm !== undefined && this.up.get(vm) === link) {
      this.up.delete(vm);
      this.since.set(vm, Date.now());
      this.o.log.info({ group: this.o.group, peer: vm, why: why.message }, 'group peer disconnected');
      this.o.onDown(vm, why.message);
    }
    if (role === 'dialer' && vm !== undefined && !this.closed) this.redial(vm, why.message);
  }
}
