import net from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { NbdServer, StaticExports, type BlockBackend } from '../../src/nbd/index.js';

// Each NBD connection may pin up to maxInFlightBytes of the server's memory; without a cap on
// connections, clients together could make it hold any amount.

const GREETING_BYTES = 18;
const NBDMAGIC = 0x4e42444d41474943n; // from the NBD spec, not the server's constants

function memoryBackend(size: number): BlockBackend {
  const bytes = Buffer.alloc(size);
  return {
    size,
    read: (offset, length) => Promise.resolve(Buffer.from(bytes.subarray(offset, offset + length))),
    write: (offset, data) => Promise.resolve(void data.copy(bytes, offset)),
    zero: (offset, length) => Promise.resolve(void bytes.fill(0, offset, offset + length)),
    trim: (offset, length) => Promise.resolve(void bytes.fill(0, offset, offset + length)),
    flush: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
}

/** What a fresh connection gets: the server's greeting, or a hang-up with nothing sent. */
function connect(port: number): Promise<{ socket: net.Socket; outcome: 'greeted' | 'closed' }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => reject(new Error('the server neither greeted nor hung up within 10 s')), 10_000);
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= GREETING_BYTES) {
        clearTimeout(timer);
        expect(got.readBigUInt64BE(0)).toBe(NBDMAGIC);
        resolve({ socket, outcome: 'greeted' });
      }
    });
    const closed = (): void => {
      clearTimeout(timer);
      if (got.length < GREETING_BYTES) resolve({ socket, outcome: 'closed' });
    };
    socket.on('close', closed);
    socket.on('error', () => undefined); // a reset is one way of being refused; 'close' follows
  });
}

async function waitFor(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  for (const deadline = Date.now() + ms; !check();) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('NBD server connection cap (maxConnections)', () => {
  let server: NbdServer | undefined;
  const sockets: net.Socket[] = [];
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    await server?.close();
  });

  it('closes connection N+1 before the greeting, logs and counts it, and takes a new one once a slot frees', async () => {
    const logged: { msg: string; maxConnections?: number }[] = [];
    const log = pino(
      { level: 'warn' },
      new Writable({
        write(chunk: Buffer, _enc, done) {
          logged.push(JSON.parse(chunk.toString()) as { msg: string });
          done();
        },
      }),
    );
    server = new NbdServer({
      exports: new StaticExports([{ name: 'd', description: 'd', readOnly: false, backend: memoryBackend(1 << 20) }]),
      log,
      limits: { maxConnections: 2 },
    });
    const { port } = await server.listen('127.0.0.1', 0);

    const first = await connect(port);
    const second = await connect(port);
    sockets.push(first.socket, second.socket);
    expect([first.outcome, second.outcome]).toEqual(['greeted', 'greeted']);

    const third = await connect(port);
    sockets.push(third.socket);
    expect(third.outcome).toBe('closed');
    expect(server.refusedConnections).toBe(1);
    expect(server.connectionCount).toBe(2);
    await waitFor('the refusal being logged', () => logged.some((l) => /maxConnections/.test(l.msg)));
    expect(logged.find((l) => /maxConnections/.test(l.msg))?.maxConnections).toBe(2);

    first.socket.destroy();
    await waitFor('the server noticing the closed connection', () => server!.connectionCount === 1);
    const fourth = await connect(port);
    sockets.push(fourth.socket);
    expect(fourth.outcome).toBe('greeted');
    expect(server.refusedConnections).toBe(1);
  });

  it('defaults to 128 connections', () => {
    server = new NbdServer({ exports: new StaticExports([]), log: pino({ level: 'silent' }) });
    expect(server.limits.maxConnections).toBe(128);
  });
});
