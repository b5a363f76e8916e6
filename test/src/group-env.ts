import path from 'node:path';
import { getJson } from './auth-http.js';
import { freePort } from './free-port.js';
import { srSecretNew } from './credentials.js';
import { LinkCutter } from './link-cutter.js';
import type { ProtectedVm, ReplicationEnv } from './replication-env.js';

/** The `group` section of an agent's `/status` as the scenarios read it (agent/README.md). */
export interface AgentGroupStatus {
  group: string;
  vm: string;
  coordinator: string | null;
  term: number;
  peers: { vm: string; connected: boolean }[];
  rounds: { started: number; committed: number; aborted: number; refused: number };
  /** The round whose writes are held right now. */
  holding?: { round: string; writesHeld: number };
  last?: { round: string; outcome: string; holdMs: number; writesHeld: number; maxWriteHoldMs: number };
  lastFailure?: { round: string; code: string; failedBy?: string; reason: string };
  writeHoldMs: { p50: number; p99: number; max: number; count: number };
}

/** A replication group of agents, each VM with one disk `os`, protected in one {@link ReplicationEnv}. */
export class GroupEnv {
  /** Relays in front of every link of the member named `cutLinksOf`, keyed by the other end's VM. */
  readonly cutters = new Map<string, LinkCutter>();
  readonly vms = new Map<string, ProtectedVm>();
  private readonly args = new Map<string, string[]>();

  private constructor(
    readonly env: ReplicationEnv,
    readonly group: string,
    readonly secretFile: string,
  ) {}

  /**
   * Protects `names` as one group. Every member listens on a loopback port chosen before any starts;
   * links of `cutLinksOf` (if given) go through a {@link LinkCutter} each: the member whose name sorts
   * first dials the other, so the cutter sits in the dialler's `--peers`.
   */
  static async start(
    env: ReplicationEnv,
    o: {
      group: string;
      names: readonly string[];
      diskBytes: number;
      holdTimeout?: string;
      cutLinksOf?: string;
      /** One-way delay on each link of `cutLinksOf`: a member farther away than the others. */
      linkDelayMs?: number;
    },
  ): Promise<GroupEnv> {
    const secretFile = path.join(env.dir, `${o.group}.group-secret`);
    await srSecretNew(secretFile);
    const g = new GroupEnv(env, o.group, secretFile);
    const listen = new Map<string, string>();
    for (const name of o.names) listen.set(name, `127.0.0.1:${await freePort()}`);
    const victim = o.cutLinksOf;
    if (victim !== undefined) {
      for (const other of o.names) {
        if (other === victim) continue;
        const target = victim < other ? other : victim;
        const [host, port] = listen.get(target)!.split(':') as [string, string];
        const cutter = new LinkCutter(host, Number(port), o.linkDelayMs);
        await cutter.listen();
        g.cutters.set(other, cutter);
      }
    }
    for (const name of o.names) {
      const peers = o.names.map((p) => {
        // The dialler is the lower name; its view of the higher one goes through the link's cutter.
        const cutter = victim !== undefined && name < p && (name === victim || p === victim);
        const other = name === victim ? p : name;
        return `${p}=${cutter ? g.cutters.get(other)!.address : listen.get(p)!}`;
      });
      const args = [
        ...['--group', o.group, '--group-secret-file', secretFile],
        ...['--group-listen', listen.get(name)!, '--peers', peers.join(',')],
        ...(o.holdTimeout !== undefined ? ['--group-hold-timeout', o.holdTimeout] : []),
      ];
      g.args.set(name, args);
      g.vms.set(name, await env.protect(name, [{ id: 'os', size: o.diskBytes }], { args }));
    }
    return g;
  }

  vm(name: string): ProtectedVm {
    const v = this.vms.get(name);
    if (v === undefined) throw new Error(`no member ${name}`);
    return v;
  }

  /** Starts a member's agent again (after a kill) with the same options. */
  restart(name: string): Promise<void> {
    return this.env.startAgentFor(this.vm(name), { args: this.args.get(name)! });
  }

  async groupStatus(name: string): Promise<AgentGroupStatus> {
    const s = (await getJson(this.vm(name).statusUrl)) as { group?: AgentGroupStatus };
    if (s.group === undefined) throw new Error(`the agent of ${name} shows no group in its status`);
    return s.group;
  }

  async close(): Promise<void> {
    await Promise.all([...this.cutters.values()].map((c) => c.close()));
  }
}
