import { ErrorCode, SrError } from '@site-recovery/shared';
import { contains, formatIpv4, parseCidr, parseIpv4, type Cidr } from './ipv4.js';
import type { TargetPlanner } from './target-planner.js';

// Where a failed-over VM lands, decided the way Azure Site Recovery decides it for Azure-to-Azure
// replication, so an operator who knows ASR can predict the result. Pure functions: the processor
// passes in what it knows of the target region (and the addresses already taken) and records the
// answer in the manifest; nothing here touches the network or the disk.

/** A subnet of the target region. `cidr` is IPv4 `a.b.c.d/len` with no host bits set. */
export interface SubnetSpec {
  readonly name: string;
  readonly cidr: string;
}

export interface NetworkSpec {
  readonly name: string;
  readonly subnets: readonly SubnetSpec[];
}

/** What the target region already holds and its defaults for every protected VM. */
export interface RegionDefaults {
  /** Target resource group for VMs without an override. Default `<vm>-asr`. */
  readonly resourceGroup?: string;
  /** Virtual networks that exist in the target region. */
  readonly networks: readonly NetworkSpec[];
  readonly availabilitySet?: string;
}

/** Where the VM sits in the source region. `ip` is an IPv4 address or `dhcp`. */
export interface SourcePlacement {
  readonly network: string;
  readonly subnet: string;
  readonly ip: string;
  /** The source subnet's CIDR; used as the address space of a target network that is to be created. */
  readonly subnetCidr?: string;
}

/** Per-VM choices that win over every default (`sr configure --target-*`). */
export interface TargetOverrides {
  readonly resourceGroup?: string;
  readonly network?: string;
  readonly subnet?: string;
  /** A static IPv4 address inside the target subnet, or `dhcp`. */
  readonly ip?: string;
  readonly availabilitySet?: string;
}

export interface PlanTargetInput {
  readonly vm: string;
  readonly source: SourcePlacement;
  readonly region: RegionDefaults;
  /** Network mapping of the region pair: source network name → target network name. */
  readonly networkMapping?: Readonly<Record<string, string>>;
  readonly overrides?: TargetOverrides;
  /**
   * IPv4 addresses already taken: a plain address counts in any network the region already has;
   * one with its network (other failed-over or test VMs, from their manifests) counts only there,
   * including in a network that failover creates.
   */
  readonly usedIps?: Iterable<string | TakenAddress>;
}

/** An address a VM placed by an earlier failover or test failover holds. */
export interface TakenAddress {
  readonly network: string;
  readonly ip: string;
}

/** Why each part of the placement is what it is; surfaced so an operator can tell a default from a choice. */
export interface PlacementReasons {
  readonly resourceGroup: 'override' | 'region-default' | 'vm-default';
  readonly network: 'override' | 'network-mapping' | 'asr-suffix';
  readonly subnet: 'override' | 'same-name' | 'first-alphabetical' | 'created';
  readonly ip: 'override' | 'dhcp' | 'same-address' | 'next-free' | 'first-free';
  readonly availabilitySet: 'override' | 'region-default' | 'none';
}

export interface TargetPlacement {
  readonly resourceGroup: string;
  readonly network: string;
  readonly subnet: string;
  /** The target subnet's CIDR, when known (always, unless a created network has no source CIDR to copy). */
  readonly subnetCidr?: string;
  /** Static IPv4 address, or `dhcp`. */
  readonly ip: string;
  readonly availabilitySet: string | null;
  /** The target network does not exist in the region yet and is to be created (with the subnet). */
  readonly created: boolean;
  readonly reasons: PlacementReasons;
}

/** Azure keeps the network address, the first three host addresses (gateway, DNS) and the broadcast address. */
const RESERVED_AT_START = 4;
const RESERVED_AT_END = 1;
export const DHCP = 'dhcp';

/**
 * Decides the target placement of one VM:
 * - resource group: the per-VM override, else the region default, else `<vm>-asr`;
 * - network: the override, else the network mapping of the source network, else the source network's
 *   name with `-asr`; a name the region does not hold is a network to be created (`created: true`)
 *   with one subnet named like the source subnet, over the source subnet's CIDR;
 * - subnet: the override (it must exist in an existing target network), else the subnet named like the
 *   source subnet, else the first subnet of the target network in alphabetical order;
 * - IP: DHCP stays DHCP; a static address stays static — the same address when it lies inside the
 *   target subnet and is free, else the next free address after it (wrapping around), or the first free
 *   one when the address is outside the subnet. Free means not reserved by Azure (network address, the
 *   first three host addresses, broadcast) and not in `usedIps`. An override must itself be free;
 * - availability set: the override, else the region default, else none.
 *
 * Unusable input (bad CIDR or address, unknown subnet, a subnet with no free address) throws
 * `SR_BAD_OPTION` with a message that says which option to change.
 */
export function planTarget(input: PlanTargetInput): TargetPlacement {
  const { vm, source, region } = input;
  const o = input.overrides ?? {};
  requireName(vm, 'VM name');
  requireName(source.network, 'source network');
  requireName(source.subnet, 'source subnet');
  if (source.subnetCidr !== undefined) parseCidr(source.subnetCidr, `source subnet ${source.subnet}`);
  const sourceIp = source.ip === DHCP ? undefined : parseIpv4(source.ip, `source IP of ${vm}`);
  checkRegion(region);
  const resourceGroup = pickResourceGroup(vm, region, o);
  const network = pickNetwork(source, input.networkMapping, o);
  const existing = region.networks.find((n) => n.name === network.name);
  const used = new Set<number>();
  for (const u of input.usedIps ?? []) {
    if (typeof u === 'string') {
      // The region's own addresses; a network failover creates holds none of them.
      if (existing !== undefined) used.add(parseIpv4(u, 'used IP'));
    } else if (u.network === network.name && u.ip !== DHCP) {
      used.add(parseIpv4(u.ip, `IP of a VM already in ${u.network}`));
    }
  }

  let subnet: { name: string; cidr?: string; reason: PlacementReasons['subnet'] };
  if (existing === undefined) {
    // A network to be created copies the source subnet, so nothing else in it holds an address yet.
    subnet = {
      name: o.subnet ?? source.subnet,
      ...(source.subnetCidr !== undefined ? { cidr: source.subnetCidr } : {}),
      reason: o.subnet !== undefined ? 'override' : 'created',
    };
  } else {
    subnet = pickSubnet(existing, source.subnet, o.subnet);
  }
  const inNewNetwork = existing === undefined;

  const ip = pickIp({ vm, sourceIp, override: o.ip, subnet, used });
  const availabilitySet = o.availabilitySet ?? region.availabilitySet ?? null;
  if (o.availabilitySet !== undefined) requireName(o.availabilitySet, '--availability-set');
  return {
    resourceGroup: resourceGroup.name,
    network: network.name,
    subnet: subnet.name,
    ...(subnet.cidr !== undefined ? { subnetCidr: subnet.cidr } : {}),
    ip: ip.value,
    availabilitySet,
    created: inNewNetwork,
    reasons: {
      resourceGroup: resourceGroup.reason,
      network: network.reason,
      subnet: subnet.reason,
      ip: ip.reason,
      availabilitySet:
        o.availabilitySet !== undefined ? 'override' : region.availabilitySet !== undefined ? 'region-default' : 'none',
    },
  };
}

function pickResourceGroup(
  vm: string,
  region: RegionDefaults,
  o: TargetOverrides,
): { name: string; reason: PlacementReasons['resourceGroup'] } {
  if (o.resourceGroup !== undefined)
    return { name: requireName(o.resourceGroup, '--target-resource-group'), reason: 'override' };
  if (region.resourceGroup !== undefined)
    return { name: requireName(region.resourceGroup, 'region default resource group'), reason: 'region-default' };
  return { name: `${vm}-asr`, reason: 'vm-default' };
}

function pickNetwork(
  source: SourcePlacement,
  mapping: Readonly<Record<string, string>> | undefined,
  o: TargetOverrides,
): { name: string; reason: PlacementReasons['network'] } {
  if (o.network !== undefined) return { name: requireName(o.network, '--target-network'), reason: 'override' };
  // Object.hasOwn: a network named "constructor" must not find Object.prototype's.
  if (mapping !== undefined && Object.hasOwn(mapping, source.network)) {
    return {
      name: requireName(mapping[source.network]!, `network mapping of ${source.network}`),
      reason: 'network-mapping',
    };
  }
  return { name: `${source.network}-asr`, reason: 'asr-suffix' };
}

function pickSubnet(
  network: NetworkSpec,
  sourceSubnet: string,
  override: string | undefined,
): { name: string; cidr: string; reason: PlacementReasons['subnet'] } {
  if (override !== undefined) {
    const s = network.subnets.find((x) => x.name === override);
    if (s === undefined) {
      throw new SrError(
        ErrorCode.BAD_OPTION,
        `--target-subnet "${override}" does not exist in target network ${network.name} (it has: ${subnetNames(network)}); pick one of those`,
      );
    }
    return { name: s.name, cidr: s.cidr, reason: 'override' };
  }
  const same = network.subnets.find((x) => x.name === sourceSubnet);
  if (same !== undefined) return { name: same.name, cidr: same.cidr, reason: 'same-name' };
  // Plain code-unit order, not the locale's: the same answer on every machine.
  const first = [...network.subnets].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))[0];
  if (first === undefined) {
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `target network ${network.name} has no subnet; add one in the target region or choose another network with --target-network`,
    );
  }
  return { name: first.name, cidr: first.cidr, reason: 'first-alphabetical' };
}

function pickIp(a: {
  vm: string;
  sourceIp: number | undefined;
  override: string | undefined;
  subnet: { name: string; cidr?: string };
  used: ReadonlySet<number>;
}): { value: string; reason: PlacementReasons['ip'] } {
  const cidr = a.subnet.cidr === undefined ? undefined : parseCidr(a.subnet.cidr, `subnet ${a.subnet.name}`);
  if (a.override !== undefined) {
    if (a.override === DHCP) return { value: DHCP, reason: 'override' };
    const ip = parseIpv4(a.override, '--target-ip');
    if (cidr !== undefined) {
      const why = !contains(cidr, ip)
        ? `is outside subnet ${a.subnet.name} (${a.subnet.cidr})`
        : isReserved(cidr, ip)
          ? `is reserved in subnet ${a.subnet.name} (${a.subnet.cidr}): the network address, the first three host addresses and the broadcast address are`
          : a.used.has(ip)
            ? 'is already in use in the target network'
            : undefined;
      if (why !== undefined) {
        throw new SrError(
          ErrorCode.BAD_OPTION,
          `--target-ip ${a.override} ${why}; choose a free address in ${a.subnet.cidr}, or "dhcp"`,
        );
      }
    }
    return { value: formatIpv4(ip), reason: 'override' };
  }
  if (a.sourceIp === undefined) return { value: DHCP, reason: 'dhcp' };
  // A created network whose address space is unknown copies the source's, so the address is free there.
  if (cidr === undefined) return { value: formatIpv4(a.sourceIp), reason: 'same-address' };
  if (contains(cidr, a.sourceIp) && isFree(cidr, a.sourceIp, a.used))
    return { value: formatIpv4(a.sourceIp), reason: 'same-address' };
  const first = cidr.network + RESERVED_AT_START;
  const last = cidr.broadcast - RESERVED_AT_END;
  const inside = contains(cidr, a.sourceIp) && !isReserved(cidr, a.sourceIp);
  const start = inside ? a.sourceIp : first;
  const span = last - first + 1;
  for (let i = 0; i < span; i++) {
    const ip = first + ((start - first + i) % span);
    if (isFree(cidr, ip, a.used)) return { value: formatIpv4(ip), reason: inside ? 'next-free' : 'first-free' };
  }
  throw new SrError(
    ErrorCode.BAD_OPTION,
    `subnet ${a.subnet.name} (${a.subnet.cidr}) has no free address for ${a.vm}; choose another subnet with --target-subnet, a free --target-ip, or --target-ip dhcp`,
  );
}

function isReserved(c: Cidr, ip: number): boolean {
  return ip < c.network + RESERVED_AT_START || ip > c.broadcast - RESERVED_AT_END;
}

function isFree(c: Cidr, ip: number, used: ReadonlySet<number>): boolean {
  return contains(c, ip) && !isReserved(c, ip) && !used.has(ip);
}

function checkRegion(region: RegionDefaults): void {
  const seen = new Set<string>();
  for (const n of region.networks) {
    requireName(n.name, 'target network name');
    if (seen.has(n.name))
      throw new SrError(
        ErrorCode.BAD_OPTION,
        `target network ${n.name} is listed twice in the region defaults; keep one`,
      );
    seen.add(n.name);
    const subnets = new Set<string>();
    for (const s of n.subnets) {
      requireName(s.name, `subnet name in network ${n.name}`);
      if (subnets.has(s.name))
        throw new SrError(
          ErrorCode.BAD_OPTION,
          `subnet ${s.name} is listed twice in target network ${n.name}; keep one`,
        );
      subnets.add(s.name);
      parseCidr(s.cidr, `subnet ${s.name} of network ${n.name}`);
    }
  }
}

function requireName(name: string, what: string): string {
  if (typeof name !== 'string' || name.trim() === '' || name !== name.trim()) {
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `${what} "${String(name)}" must be a non-empty name without surrounding spaces`,
    );
  }
  return name;
}

function subnetNames(n: NetworkSpec): string {
  return n.subnets.length === 0 ? 'no subnets' : n.subnets.map((s) => `${s.name} ${s.cidr}`).join(', ');
}

// --- the planner the failover service takes -----------------------------------------------------------

export interface TargetPlannerOptions {
  readonly region?: RegionDefaults;
  readonly networkMapping?: Readonly<Record<string, string>>;
  /** Addresses of the region's own machines, taken in its existing networks. */
  readonly usedIps?: () => Iterable<string>;
}

/** Source names used when a VM's config does not say where it sits (no `sr configure --source-*` yet). */
const UNKNOWN_SOURCE = { network: 'default', subnet: 'default', ip: DHCP } as const;

/**
 * {@link planTarget} behind the `plan()` shape the failover service takes. A test failover's network
 * is an override: ASR places the test VM in the network the operator picks, by the same subnet and IP
 * rules.
 */
export function createTargetPlanner(o: TargetPlannerOptions = {}): TargetPlanner {
  return {
    plan: (input) => {
      const overrides: TargetOverrides = {
        ...input.target,
        ...(input.test && input.network !== undefined ? { network: input.network } : {}),
      };
      const p = planTarget({
        vm: input.vm,
        source: {
          network: input.source.network ?? UNKNOWN_SOURCE.network,
          subnet: input.source.subnet ?? UNKNOWN_SOURCE.subnet,
          ip: input.source.ip ?? UNKNOWN_SOURCE.ip,
        },
        region: o.region ?? { networks: [] },
        ...(o.networkMapping !== undefined ? { networkMapping: o.networkMapping } : {}),
        overrides,
        usedIps: [...(o.usedIps?.() ?? []), ...(input.taken ?? [])],
      });
      return {
        resourceGroup: p.resourceGroup,
        network: p.network,
        subnet: p.subnet,
        ip: p.ip,
        availabilitySet: p.availabilitySet,
      };
    },
  };
}
