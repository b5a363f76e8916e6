import type WebSocket from 'ws';
import type { DiskInfo } from '@site-recovery/shared';

/** One WebSocket to the cache-store and what the puller knows of it; a redial makes a new one. */
export class Connection {
  /** VM → the cache-store generation it was subscribed at. */
  readonly subscribed = new Map<string, string>();
  /** VM → the stream the cache-store announced (batches are checked against it). */
  readonly streams = new Map<string, { generation: string; disks: readonly DiskInfo[] }>();
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
