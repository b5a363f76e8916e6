import { ErrorCode, SrError, checkId, type BackoffOptions } from '@site-recovery/shared';

/** The group port, as the anchor uses (Linux needs it opened in the firewall). */
export const DEFAULT_GROUP_PORT = 20004;
/**
 * How long a member holds write replies waiting for the COMMIT of a round it is READY for. Well under
 * the anchor's 300 ms: the hold is one round trip from the coordinator to the slowest member and back.
 */
export const DEFAULT_HOLD_TIMEOUT_MS = 100;
/** The anchor's maximum; a longer hold would be felt by the applications as a stall. */
export const MAX_HOLD_TIMEOUT_MS = 500;
/** Shortest hold timeout accepted: below it no round trip on a busy host makes it in time. */
export const MIN_HOLD_TIMEOUT_MS = 10;
/** Multi-VM points until the processor's policy says otherwise. */
export const DEFAULT_MULTI_VM_FREQUENCY_MS = 5 * 60_000;
/**
 * The coordinator gives up on READY after this fraction of the hold timeout, so that its ABORT
 * reaches the members before their own timeout releases them anyway.
 */
export const ROUND_TIMEOUT_FRACTION = 0.6;

/** One member of the group, as `--peers` names it: where the others dial it. */
export interface GroupPeer {
  readonly vm: string;
  readonly host: string;
  readonly port: number;
}

/** Limits of the peer links, with their defaults (see DEFAULT_PEER_LIMITS). */
export interface PeerLimits {
  /** Largest frame accepted before the peer has authenticated. Default 4 KiB. */
  readonly preAuthFrameBytes: number;
  /** Largest frame accepted from an authenticated peer. Default 64 KiB. */
  readonly frameBytes: number;
  /** Bytes queued towards a peer that does not read; past it the link is dropped. Default 1 MiB. */
  readonly queuedBytes: number;
  /** How often a link sends a heartbeat. Default 200 ms. */
  readonly heartbeatMs: number;
  /** A peer silent this long (no frame at all) is down: its link is closed. Default 1 s. */
  readonly peerTimeoutMs: number;
  /** Time allowed for the challenge-response after a connection opens. Default 2 s. */
  readonly handshakeTimeoutMs: number;
  /** Connections accepted and not yet authenticated at once; more are closed on accept. Default 64. */
  readonly pendingHandshakes: number;
  /** Spacing of redials to a peer this member dials. Default 100 ms doubling to 2 s, half of it random. */
  readonly redial: BackoffOptions;
  /** Held writes whose hold goes into the status percentiles (the most recent ones). Default 10 000. */
  readonly holdWindow: number;
}

export const DEFAULT_PEER_LIMITS: PeerLimits = {
  preAuthFrameBytes: 4 * 1024,
  frameBytes: 64 * 1024,
  queuedBytes: 1024 * 1024,
  heartbeatMs: 200,
  peerTimeoutMs: 1000,
  handshakeTimeoutMs: 2000,
  pendingHandshakes: 64,
  redial: { initialDelayMs: 100, maxDelayMs: 2000, jitter: 0.5 },
  holdWindow: 10_000,
};

/** A replication group this agent's VM belongs to (docs/multi-vm.md). */
export interface GroupConfig {
  readonly name: string;
  /** The group credential every member holds (`sr secret new --out FILE`); not a token. */
  readonly secret: Buffer;
  /** Every member, this VM included, each with the address the others dial. */
  readonly peers: readonly GroupPeer[];
  /** Where this member listens for the members that sort before it. Default: its own `peers` entry. */
  readonly listen?: { readonly host: string; readonly port: number };
  /** Default {@link DEFAULT_HOLD_TIMEOUT_MS}, at most {@link MAX_HOLD_TIMEOUT_MS}. */
  readonly holdTimeoutMs?: number;
  /**
   * Multi-VM points every this often until the processor's policy sets it. Default
   * {@link DEFAULT_MULTI_VM_FREQUENCY_MS}; tests in one process may go lower than the policy's 1 s.
   */
  readonly frequencyMs?: number;
  readonly limits?: Partial<PeerLimits>;
}

const bad = (message: string): SrError => new SrError(ErrorCode.BAD_OPTION, message);

/** Parses `--peers VM=HOST[:PORT],...`; the port defaults to {@link DEFAULT_GROUP_PORT}. */
export function parsePeers(value: string, option = '--peers'): GroupPeer[] {
  const example = `for example ${option} web01=10.0.0.4:20004,db01=10.0.0.5`;
  const peers: GroupPeer[] = [];
  for (const entry of value.split(',')) {
    const eq = entry.indexOf('=');
    if (eq <= 0 || eq === entry.length - 1) throw bad(`${option} entry "${entry}" is not VM=HOST[:PORT] (${example})`);
    const vm = entry.slice(0, eq).trim();
    checkId(`${option} VM name`, vm);
    const address = entry.slice(eq + 1).trim();
    const m = /^\[([^\]\s]+)\](?::(\d{1,5}))?$/.exec(address) ?? /^([^:\s/@=[\]]+)(?::(\d{1,5}))?$/.exec(address);
    if (m === null) throw bad(`${option} address "${address}" of ${vm} is not HOST[:PORT] (${example})`);
    const host = m[1]!;
    const port = m[2] !== undefined ? Number(m[2]) : DEFAULT_GROUP_PORT;
    if (port < 1 || port > 65535)
      throw bad(`${option} address "${address}" of ${vm} has port ${port}: give the port it listens on (1-65535)`);
    peers.push({ vm, host, port });
  }
  return peers;
}

/**
 * Refuses, before anything starts, a group this member could never take part in. Every message says
 * what to change.
 */
export function checkGroupConfig(vm: string, g: GroupConfig): void {
  checkId('group name', g.name);
  const seen = new Set<string>();
  for (const p of g.peers) {
    checkId('peer VM name', p.vm);
    if (seen.has(p.vm)) throw bad(`--peers names VM ${p.vm} twice: give each member once`);
    seen.add(p.vm);
    if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535)
      throw bad(`--peers gives VM ${p.vm} the port ${p.port}: use 1-65535`);
  }
  if (!seen.has(vm))
    throw bad(
      `--peers has no entry for this VM (${vm}): every member names every member, itself included ` +
        `(add ${vm}=HOST:PORT, the address the others reach it on)`,
    );
  if (seen.size < 2)
    throw bad(`--peers names only ${vm}: a group needs at least two members, each named in every member's --peers`);
  const hold = g.holdTimeoutMs ?? DEFAULT_HOLD_TIMEOUT_MS;
  if (!Number.isFinite(hold) || hold < MIN_HOLD_TIMEOUT_MS || hold > MAX_HOLD_TIMEOUT_MS)
    throw bad(
      `--group-hold-timeout ${hold} ms is outside ${MIN_HOLD_TIMEOUT_MS}-${MAX_HOLD_TIMEOUT_MS} ms: ` +
        'writes held longer stall the applications; a round that cannot commit in time is aborted and retried',
    );
  const f = g.frequencyMs ?? DEFAULT_MULTI_VM_FREQUENCY_MS;
  if (!Number.isFinite(f) || f <= 0) throw bad(`the multi-VM frequency ${f} ms must be positive`);
  if (g.secret.length === 0)
    throw bad('--group needs --group-secret-file FILE (make one with sr secret new --out FILE)');
}

/** Where this member listens: `listen`, else the address of its own `peers` entry. */
export function listenAddress(vm: string, g: GroupConfig): { host: string; port: number } {
  if (g.listen !== undefined) return g.listen;
  const own = g.peers.find((p) => p.vm === vm);
  if (own === undefined) throw bad(`--peers has no entry for this VM (${vm})`);
  return { host: own.host, port: own.port };
}
