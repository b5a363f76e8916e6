import type { SourceConfig } from '../vm-config.js';
import type { TakenAddress, TargetOverrides } from './target-resources.js';

/** Where a failed-over VM lands, as its manifest records it. */
export interface ResolvedTarget {
  readonly resourceGroup: string;
  readonly network: string;
  readonly subnet: string;
  /** Static IPv4 address, or `dhcp`. */
  readonly ip: string;
  readonly availabilitySet: string | null;
}

/** What a planner is asked: a VM's placement as its config holds it (any field may still be unset). */
export interface ConfiguredPlacement {
  readonly vm: string;
  readonly source: SourceConfig;
  readonly target: TargetOverrides;
  /** A test failover: `network` is the isolated network it goes to. */
  readonly test: boolean;
  readonly network?: string;
  /** Addresses held by VMs that earlier failovers and test failovers placed, so no two get one address. */
  readonly taken?: readonly TakenAddress[];
}

/** Decides where a failover puts a VM; `createTargetPlanner` of target-resources.ts follows ASR's rules. */
export interface TargetPlanner {
  plan(input: ConfiguredPlacement): ResolvedTarget;
}

/**
 * The planner of a processor given none: ASR's names (an `-asr` resource group and network beside the
 * source's) without a target region to check them against, and any network the caller names.
 */
export const defaultTargetPlanner: TargetPlanner = {
  plan: ({ vm, source, target, network }) => ({
    resourceGroup: target.resourceGroup ?? `${vm}-asr`,
    network: network ?? target.network ?? (source.network !== undefined ? `${source.network}-asr` : 'default-asr'),
    subnet: target.subnet ?? source.subnet ?? 'default',
    ip: target.ip ?? source.ip ?? 'dhcp',
    availabilitySet: target.availabilitySet ?? null,
  }),
};
