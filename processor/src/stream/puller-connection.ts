import type WebSocket from 'ws';
import type { DiskInfo, Policy } from '@site-recovery/shared';

/** A VM's policy as relayed to its agent: what the `policy` message carries besides its type and VM. */
export type AgentPolicy = Omit<Policy, 't' | 'vm'>;

/** One WebSocket to the cache-store and what the puller knows of it; a redial makes a new one. */
export class Connection {
  /** VM → the cache-store generation it was subscribed at. */
  readonly subscribed = new Map<string, string>();
  /** VM → the stream the cache-store announced (batches are checked against it). */
  readonly streams = new Map<string, { generation: string; disks: readonly DiskInfo[] }>();
  /** VM → the replication group its last policy on this connection was sent for (null: none). */
  readonly policyGroup = new Map<string, string | null>();
  listed = false;
  /** The cache-store answered the upgrade with an HTTP error (its code is the last error). */
  refused = false;
  closed = false;
  faulted = false;
  alive = true;
  queuedBytes = 0;
  heartbeat: NodeJS.Timeout | undefined;

  constructor(readonly ws: WebSocket) {}
}
