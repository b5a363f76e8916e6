import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { MessageSchema, decodeMessage, encodeMessage } from '@site-recovery/shared';
import { afterEach, describe, expect, it } from 'vitest';
import { agentHello, batchFrame, eventually, within } from '../helpers.js';
import { captureLog, mint, newSecret, openPeer, proofFor, snapshot } from './auth-fixture.js';
import { RawWs, clientFrame } from './raw-ws.js';
import { expectError, useServers, type RunningServer } from './server-harness.js';

const { server, agent, connect } = useServers();
const sockets: net.Socket[] = [];
afterEach(() => sockets.splice(0).forEach((s) => s.destroy()));

/** A TCP connection from `localAddress` that says nothing; resolves once connected. */
async function idleSocket(s: RunningServer, localAddress = '127.0.0.1'): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port: s.server.address.port, localAddress });
  sockets.push(socket);
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

const closedByServer = (socket: net.Socket): Promise<void> =>
  within(new Promise<void>((resolve) => socket.once('close', () => resolve())), 10_000, 'the server closing it');

describe('limits before trust', () => {
  it('caps connections per source address before any credential, counts and logs the refusals once per burst', async () => {
    const { log, lines } = captureLog();
    const s = await server({ auth: { secret: newSecret() }, limits: { maxConnectionsPerSource: 3 }, log });
    const held = [await idleSocket(s), await idleSocket(s), await idleSocket(s)];
    // Past the cap: a silent socket is closed at once, and so is a well-authenticated upgrade.
    await closedByServer(await idleSocket(s));
    const token = mint(s.secret!, { role: 'agent', vm: 'vm1' });
    await expect(openPeer(s.url, { headers: proofFor(token, s.url) })).rejects.toThrow(/socket hang up|ECONNRESET/);
    // Another source address has its own count.
    const other = await openPeer(s.url, { headers: proofFor(token, s.url), localAddress: '127.0.0.2' });
    other.send(agentHello('vm1', 'g1'));
    await other.expect('welcome');
    held[0]!.destroy();
    await eventually(
      async () => (await s.status().catch(() => undefined)) !== undefined,
      10_000,
      'a freed place taking a connection again',
    );
    expect((await s.status()).refusedConnections).toBeGreaterThanOrEqual(2);
    const logged = lines().filter((l) => l['code'] === 'SR_LIMIT' && l['source'] === '127.0.0.1');
    expect(logged).toHaveLength(1);
    expect(logged[0]!['msg']).toMatch(/maxConnectionsPerSource/);
  });

  it('an authenticated peer still sends nothing larger than a hello before its hello (SR_LIMIT), storing nothing', async () => {
    const s = await server({ auth: { secret: newSecret() }, limits: { maxHelloBytes: 4096 } });
    const { peer } = await agent(s, 'vm1', 'g1');
    peer.send(await batchFrame('vm1', 'g1', 1, 4));
    await peer.ackedThrough(4);
    const before = await snapshot(s.dataDir);
    const big = await connect(s, { token: mint(s.secret!, { role: 'agent', vm: 'vm1' }) });
    big.send(Buffer.alloc(1024 * 1024, 0x82));
    expect(await expectError(big, 'SR_LIMIT')).toMatch(/maxHelloBytes \(4096\) sent before the hello/);
    expect(await snapshot(s.dataDir)).toEqual(before);
    // The writer of vm1 was never replaced, and goes on.
    peer.send(await batchFrame('vm1', 'g1', 5, 4));
    expect(await peer.ackedThrough(8)).toBe(8);
  });

  it('counts only what precedes the hello: a batch larger than maxHelloBytes in the same read as it is taken', async () => {
    const s = await server({ auth: { secret: newSecret() }, limits: { maxHelloBytes: 4096 } });
    const token = mint(s.secret!, { role: 'agent', vm: 'vm1' });
    const frames = Buffer.concat([
      clientFrame(0x82, encodeMessage(agentHello('vm1', 'g1'))),
      clientFrame(0x82, await batchFrame('vm1', 'g1', 1, 4, 16 * 1024)),
    ]);
    // Upgrade request, hello and batch in one write: the server reads them as one chunk.
    const raw = await rawUpgrade(s, proofFor(token, s.url), frames);
    const welcome = decodeMessage((await raw.next()).payload, MessageSchema);
    expect(welcome).toMatchObject({ t: 'welcome', durableLsn: 0 });
    expect(decodeMessage((await raw.next()).payload, MessageSchema)).toEqual({ t: 'ack', lsn: 4 });
    raw.destroy();
  });
});

// RawWs.open sends no credential; its constructor only attaches a parser to the socket, so the
// handshake is written here with the proof header, followed by `then` in the same write.
const RawWsOf = RawWs as unknown as new (socket: net.Socket) => RawWs;

async function rawUpgrade(s: RunningServer, headers: Record<string, string>, then: Buffer): Promise<RawWs> {
  const socket = net.connect(s.server.address.port, '127.0.0.1');
  sockets.push(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const raw = new RawWsOf(socket);
  const extra = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  const request =
    `GET / HTTP/1.1\r\nHost: 127.0.0.1:${s.server.address.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`;
  socket.write(Buffer.concat([Buffer.from(request, 'latin1'), then]));
  return raw;
}
