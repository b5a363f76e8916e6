import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  AgentHelloSchema,
  PROTOCOL_VERSION,
  decodeMessage,
  encodeMessage,
  type AgentHello,
} from '@site-recovery/shared';
import { tempDir, waitUntil } from '@site-recovery/test';
import type { Agent } from '../../src/agent.js';
import { DEFAULT_MULTI_VM_FREQUENCY_MS } from '../../src/group/group-config.js';
import { startInProcess } from '../in-process-agent.js';
import { GROUP, SECRET, loopbackPeers } from './group-fixture.js';

// The multi-VM frequency has one source of truth, the processor: its policy, relayed by the
// cache-store, reaches the group member, and the agent names its group in the hello so that the
// processor knows which policy to send it.

let t: { dir: string; cleanup: () => Promise<void> };
let wss: WebSocketServer;
let agent: Agent;
let stream: { ws: WebSocket; hello: AgentHello } | undefined;

beforeAll(async () => {
  t = await tempDir('group-policy');
  // A stand-in cache-store: it welcomes the stream and sends policies; batches are not its concern here.
  wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise((resolve) => wss.once('listening', resolve));
  wss.on('connection', (ws) => {
    ws.once('message', (data: Buffer) => {
      stream = { ws, hello: decodeMessage(data, AgentHelloSchema) };
      ws.send(encodeMessage({ t: 'welcome', v: PROTOCOL_VERSION, durableLsn: 0 }));
    });
  });
  const peers = await loopbackPeers(['a', 'b']);
  ({ agent } = await startInProcess(t.dir, 'a', {
    replication: { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/` },
    group: { name: GROUP, secret: SECRET, peers },
  }));
});
afterAll(async () => {
  await agent?.close();
  for (const ws of wss?.clients ?? []) ws.terminate();
  await new Promise((resolve) => wss?.close(resolve));
  await t?.cleanup();
});

const frequency = (): number => agent.status().group!.frequencyMs;
const policy = (multiVmFrequencyMs?: number): Buffer =>
  encodeMessage({
    t: 'policy',
    vm: 'a',
    appConsistentFrequencyMs: 0,
    ...(multiVmFrequencyMs !== undefined ? { multiVmFrequencyMs } : {}),
  });

describe('the multi-VM frequency', () => {
  it('is the default until the policy sets it, follows the policy, and returns to the default without one', async () => {
    const s = await waitUntil('the agent to say hello to the cache-store', () => stream, 10_000, 10);
    expect(s.hello).toMatchObject({ vm: 'a', group: GROUP });
    expect(frequency()).toBe(DEFAULT_MULTI_VM_FREQUENCY_MS);

    s.ws.send(policy(2000));
    await waitUntil(
      'the group to take the policy frequency',
      () => (frequency() === 2000 ? true : undefined),
      10_000,
      10,
    );

    s.ws.send(policy(undefined));
    await waitUntil(
      'the group to return to the default frequency',
      () => (frequency() === DEFAULT_MULTI_VM_FREQUENCY_MS ? true : undefined),
      10_000,
      10,
    );
  });
});
