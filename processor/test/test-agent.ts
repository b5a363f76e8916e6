import {
  MessageSchema,
  PROTOCOL_VERSION,
  decodeMessage,
  encodeBatch,
  encodeMessage,
  type ChangeRecord,
  type DiskInfo,
  type Policy,
  type Progress,
} from '@site-recovery/shared';
import { WebSocket } from 'ws';
import { Condition } from './condition.js';

/**
 * The agent's side of the replication protocol, driven by the test: it feeds a real cache-store
 * the records a test builds, framed by the shared batch codec exactly as the agent frames them.
 * Records are sent as given, so a record with a wrong checksum or out of its disk's bounds reaches
 * the processor through the cache-store, which stores batches without opening their records.
 */
export class TestAgent {
  private acked = 0;
  private welcome: number | undefined;
  private refused: { code: string; message: string } | undefined;
  private closeInfo: { code: number; reason: string } | undefined;
  private readonly cond = new Condition();
  /** Every policy the processor sent through the cache-store, oldest first. */
  readonly policies: Policy[] = [];

  private constructor(
    private readonly ws: WebSocket,
    readonly vm: string,
    readonly generation: string,
  ) {
    // One listener from the start: a policy can arrive in the same read as the welcome.
    ws.on('message', (data: Buffer) => {
      const m = decodeMessage(data, MessageSchema);
      if (m.t === 'welcome') this.acked = this.welcome = m.durableLsn;
      else if (m.t === 'ack') this.acked = Math.max(this.acked, m.lsn);
      else if (m.t === 'policy') this.policies.push(m);
      else if (m.t === 'error') this.refused = { code: m.code, message: m.message };
      this.cond.changed();
    });
    ws.on('close', (code, reason) => {
      this.closeInfo = { code, reason: reason.toString() };
      this.cond.changed();
    });
  }

  /** What the cache-store held durably of this generation when the agent said hello. */
  get welcomeLsn(): number {
    return this.welcome ?? 0;
  }

  /**
   * Says hello for `vm` and `generation` (in replication group `group`, in `mode`, if given) and waits for the
   * cache-store's welcome.
   */
  static async connect(
    url: string,
    vm: string,
    generation: string,
    disks: readonly DiskInfo[],
    group?: string,
    mode?: 'watch',
  ): Promise<TestAgent> {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 64 << 20 });
    ws.on('error', () => undefined); // a refused or dropped link shows in the close
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('close', (code) => reject(new Error(`agent ${vm}: connection closed (${code}) before it opened`)));
    });
    const a = new TestAgent(ws, vm, generation);
    const hello = { t: 'hello', v: PROTOCOL_VERSION, role: 'agent', vm, generation, disks };
    ws.send(
      encodeMessage({
        ...hello,
        ...(group !== undefined ? { group } : {}),
        ...(mode !== undefined ? { mode } : {}),
      }),
    );
    await a.cond.until(`agent ${vm}: the cache-store's welcome`, () => {
      if (a.welcome !== undefined) return true;
      if (a.refused !== undefined) throw new Error(`agent ${vm}: refused: ${a.refused.code}: ${a.refused.message}`);
      if (a.closeInfo !== undefined)
        throw new Error(`agent ${vm}: connection closed (${a.closeInfo.code}) before the welcome`);
      return undefined;
    });
    return a;
  }

  /** Waits for a policy from the processor that `match` accepts; returns it. */
  policy(what: string, match: (p: Policy) => boolean, timeoutMs = 10_000): Promise<Policy> {
    return this.cond.until(
      `agent ${this.vm}: a policy with ${what}`,
      () => this.policies.find(match),
      timeoutMs,
      () => `policies received: ${JSON.stringify(this.policies)}`,
    );
  }

  /** Sends `records` (consecutive LSNs) as one batch; resolves once it is written to the socket. */
  async send(records: readonly ChangeRecord[], progress?: Progress): Promise<void> {
    const { frame } = await encodeBatch(records, {
      vm: this.vm,
      generation: this.generation,
      ...(progress ? { progress } : {}),
    });
    await new Promise<void>((resolve, reject) => this.ws.send(frame, (err) => (err ? reject(err) : resolve())));
  }

  /** Sends `records` as one batch and waits until the cache-store has made them durable. */
  async store(records: readonly ChangeRecord[], progress?: Progress): Promise<void> {
    await this.send(records, progress);
    await this.ackedThrough(records[records.length - 1]!.lsn);
  }

  /** Waits for the cache-store's acknowledgement of `lsn`; fails at once if it refused the stream. */
  ackedThrough(lsn: number, timeoutMs = 20_000): Promise<void> {
    return this.cond
      .until(
        `the cache-store to acknowledge ${this.vm} LSN ${lsn}`,
        () => {
          if (this.acked >= lsn) return true;
          if (this.refused !== undefined)
            throw new Error(`the cache-store refused ${this.vm}: ${this.refused.code}: ${this.refused.message}`);
          if (this.closeInfo !== undefined)
            throw new Error(
              `the cache-store closed ${this.vm}'s stream (${this.closeInfo.code} ${this.closeInfo.reason})`,
            );
          return undefined;
        },
        timeoutMs,
        () => `acknowledged through ${this.acked}`,
      )
      .then(() => undefined);
  }

  close(): Promise<void> {
    if (this.closeInfo !== undefined) return Promise.resolve();
    return new Promise((resolve) => {
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }
}
