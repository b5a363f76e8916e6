import type { Logger } from '@site-recovery/shared';
import type { StateStore } from '../agent-state.js';
import type { Journal } from '../journal/journal.js';
import type { ReplicationStatus } from '../replication/agent-replication.js';
import type { InitialCopyStatus } from '../replication/initial-copy.js';
import { Shipper } from '../replication/shipper.js';
import type { WatchAgentConfig } from './watch-config.js';

/** How often the stream's state is sampled to notice that it went down (as AgentReplication does). */
const LINK_SAMPLE_MS = 1000;

/**
 * A watch-mode generation's stream: the shipper over the journal, releasing what the cache-store made
 * durable. Unlike AgentReplication it has no chunk copy (the first scan is the copy), no app-consistent
 * points (a policy's frequency is ignored: no write is ordered, so no moment is known quiesced) and no group.
 */
export class WatchReplication {
  private readonly shipper: Shipper;
  private disconnectedSince: number | undefined = Date.now();
  private linkTimer: NodeJS.Timeout | undefined;
  private releasing = Promise.resolve();

  constructor(
    private readonly o: {
      readonly config: WatchAgentConfig['replication'];
      readonly vm: string;
      readonly state: StateStore;
      readonly journal: Journal;
      readonly log: Logger;
    },
  ) {
    const rep = o.state.state.replication!;
    const r = o.config;
    this.shipper = new Shipper({
      url: r.url,
      vm: o.vm,
      generation: rep.generation,
      disks: o.state.state.disks,
      journal: o.journal,
      log: o.log,
      mode: 'watch',
      ...(rep.unconfirmedFromLsn !== undefined ? { startLsn: rep.unconfirmedFromLsn } : {}),
      onPositionConfirmed: () => void this.positionConfirmed(),
      ...(r.token !== undefined ? { token: r.token } : {}),
      ...(r.tlsCa !== undefined ? { tlsCa: r.tlsCa } : {}),
      ...(r.shipper !== undefined ? { limits: r.shipper } : {}),
      onAcked: (lsn) => {
        this.disconnectedSince = undefined;
        this.release(lsn);
      },
    });
  }

  start(): void {
    this.shipper.start();
    this.linkTimer = setInterval(() => this.sampleLink(), LINK_SAMPLE_MS);
    this.linkTimer.unref();
  }

  /**
   * What the cache-store holds durably can leave the journal: nothing is redone from it onto an image,
   * so no checkpoint has to pass it first.
   */
  private release(lsn: number): void {
    this.releasing = this.releasing
      .then(() => this.o.journal.releaseThrough(lsn))
      .catch((err: unknown) => this.o.log.warn({ err: (err as Error).message }, 'releasing journal segments failed'));
  }

  private sampleLink(): void {
    if (this.shipper.status().state === 'streaming') this.disconnectedSince = undefined;
    else this.disconnectedSince ??= Date.now();
  }

  private async positionConfirmed(): Promise<void> {
    if (this.o.state.state.replication?.unconfirmedFromLsn === undefined) return;
    try {
      await this.o.state.update((s) => {
        const confirmed = { ...s.replication! };
        delete confirmed.unconfirmedFromLsn;
        return { ...s, replication: confirmed };
      });
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'saving the agent state failed');
    }
  }

  status(initialCopy: InitialCopyStatus): ReplicationStatus {
    this.sampleLink();
    return {
      generation: this.o.state.state.replication!.generation,
      stream: this.shipper.status(),
      ...(this.disconnectedSince !== undefined
        ? { disconnectedSince: new Date(this.disconnectedSince).toISOString() }
        : {}),
      initialCopy,
    };
  }

  async stop(): Promise<void> {
    clearInterval(this.linkTimer);
    await this.shipper.stop();
    await this.releasing;
  }
}
