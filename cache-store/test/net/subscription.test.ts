import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BatchSchema, StreamSchema, createLogger, decodeMessage, lastLsn } from '@site-recovery/shared';
import { WebSocket } from 'ws';
import { afterAll, describe, expect, it } from 'vitest';
import { FileStreamStore } from '../../src/log/file-stream-store.js';
import { FlowSender } from '../../src/net/flow-sender.js';
import type { StreamLog } from '../../src/log/stream-log.js';
import { Subscription } from '../../src/net/subscription.js';
import { DISKS, batchFrame } from '../helpers.js';

const root = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-sub-'));
afterAll(() => fs.rm(root, { recursive: true, force: true }));

/** Stands in for a WebSocket whose peer reads only when the test says so. */
class SlowSocket {
  readonly readyState = WebSocket.OPEN;
  bufferedAmount = 0;
  maxBuffered = 0;
  readonly sent: Buffer[] = [];
  private readonly unacked: { bytes: number; cb: () => void }[] = [];

  send(data: Buffer, _opts: unknown, cb: () => void): void {
    this.sent.push(data);
    this.bufferedAmount += data.length;
    this.maxBuffered = Math.max(this.maxBuffered, this.bufferedAmount);
    this.unacked.push({ bytes: data.length, cb });
  }

  /** The peer reads `n` messages. */
  drain(n = Infinity): void {
    for (let i = 0; i < n && this.unacked.length > 0; i++) {
      const u = this.unacked.shift()!;
      this.bufferedAmount -= u.bytes;
      u.cb();
    }
  }
}

const tick = (ms = 20): Promise<void> => new Promise((r) => setTimeout(r, ms));
const FRAME = 64 * 1024;
const LIMIT = 256 * 1024;

async function filledLog(
  key: string,
  frames: number,
): Promise<{ store: FileStreamStore; log: StreamLog; sent: Buffer[] }> {
  const store = await FileStreamStore.open(path.join(root, key), { segmentBytes: 512 * 1024 });
  const log = await store.openGeneration('vm1', 'g1', DISKS);
  const sent: Buffer[] = [];
  for (let i = 0; i < frames; i++) sent.push(await appendBatch(log));
  await log.sync();
  return { store, log, sent };
}

async function appendBatch(log: StreamLog): Promise<Buffer> {
  const frame = await batchFrame('vm1', 'g1', log.appendedLsn + 1, 1, FRAME);
  const b = decodeMessage(frame, BatchSchema);
  log.append({ first: b.first, last: lastLsn(b), frame });
  return frame;
}

describe('Subscription flow control', () => {
  it('keeps the send buffer within the limit while behind and while live, and loses nothing', async () => {
    const { store, log, sent } = await filledLog('flow', 40); // 2.5 MiB behind
    const ws = new SlowSocket();
    const errors: unknown[] = [];
    const sender = new FlowSender(ws as unknown as WebSocket, LIMIT);
    const sub = new Subscription(
      'vm1',
      { generation: 'g1', from: 1 },
      sender,
      (e) => errors.push(e),
      createLogger('t', 'silent'),
    );
    sub.attach(log);
    await tick(100);
    expect(decodeMessage(ws.sent[0]!, StreamSchema)).toMatchObject({ from: 1, generation: 'g1' });
    expect(ws.sent.length).toBeLessThan(41); // it stopped: nobody reads
    expect(ws.maxBuffered).toBeLessThanOrEqual(LIMIT + FRAME + 1024);

    // The peer reads a little at a time; new frames keep arriving meanwhile (the live path).
    for (let round = 0; round < 60; round++) {
      ws.drain(3);
      if (round % 2 === 0) sent.push(await appendBatch(log));
      await tick(5);
    }
    await log.sync();
    for (let i = 0; i < 200 && ws.sent.length < sent.length + 1; i++) {
      ws.drain();
      await tick(5);
    }
    expect(ws.maxBuffered).toBeLessThanOrEqual(LIMIT + FRAME + 1024);
    expect(errors).toEqual([]);
    const frames = ws.sent.slice(1);
    expect(frames.length).toBe(sent.length);
    frames.forEach((f, i) => expect(f.equals(sent[i]!), `frame ${i}`).toBe(true));
    sub.stop();
    await store.close();
  });

  it('caught up, forwards new durable frames without reading them back', async () => {
    const { store, log } = await filledLog('live', 2);
    const ws = new SlowSocket();
    const sub = new Subscription(
      'vm1',
      { generation: 'g1', from: 3 },
      new FlowSender(ws as unknown as WebSocket, LIMIT),
      () => undefined,
      createLogger('t', 'silent'),
    );
    sub.attach(log);
    await tick();
    expect(ws.sent.length).toBe(1); // stream only: nothing from LSN 3 yet
    const f = await appendBatch(log);
    await log.sync();
    expect(ws.sent.length).toBe(2);
    expect(ws.sent[1]).toBe(f); // the very buffer appended, not a copy read from disk
    sub.stop();
    await store.close();
  });
});
