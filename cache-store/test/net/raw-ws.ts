import { randomBytes } from 'node:crypto';
import net from 'node:net';

/** A frame as the server sent it (server frames are never masked). */
export interface RawFrame {
  readonly fin: boolean;
  readonly opcode: number;
  readonly payload: Buffer;
}

export const OPCODE = { TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9 } as const;

/**
 * A client frame, masked unless told otherwise. `first` is the whole first byte (FIN, RSV bits and
 * opcode), so a test can set bits no library would.
 */
export function clientFrame(first: number, payload: Buffer, o: { mask?: boolean } = {}): Buffer {
  const mask = o.mask ?? true;
  const len = payload.length;
  const head =
    len < 126
      ? Buffer.from([first, len])
      : len < 0x10000
        ? Buffer.from([first, 126, len >> 8, len & 0xff])
        : Buffer.concat([Buffer.from([first, 127]), u64(len)]);
  if (!mask) return Buffer.concat([head, payload]);
  head[1]! |= 0x80;
  const key = randomBytes(4);
  const body = Buffer.from(payload.map((b, i) => b ^ key[i % 4]!));
  return Buffer.concat([head, key, body]);
}

export function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

/**
 * A WebSocket client at the byte level: it does the opening handshake by hand, then writes exactly
 * the bytes a test gives it and parses what comes back, so malformed frames reach the server as
 * written.
 */
export class RawWs {
  private buf = Buffer.alloc(0);
  private readonly frames: RawFrame[] = [];
  private upgraded = false;
  private refused: string | undefined;
  private ended = false;
  private wake: (() => void) | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.parse();
      this.wake?.();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake?.();
    });
    socket.on('error', () => undefined);
  }

  /** Connects and completes the opening handshake (101), or throws with the server's answer. */
  static async open(url: string): Promise<RawWs> {
    const { hostname, port } = new URL(url);
    const socket = net.connect(Number(port), hostname);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const ws = new RawWs(socket);
    socket.write(
      `GET / HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    await ws.until(() => ws.upgraded, 'the 101 answer to the upgrade request');
    return ws;
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** The next frame the server sent. */
  async next(timeoutMs = 10_000): Promise<RawFrame> {
    await this.until(() => this.frames.length > 0, 'a frame from the server', timeoutMs);
    return this.frames.shift()!;
  }

  /**
   * Reads frames up to the server's close frame and returns its code and reason with the frames
   * before it; then ends the socket as a client does after the closing handshake.
   */
  async closeFrame(timeoutMs = 10_000): Promise<{ code: number; reason: string; before: RawFrame[] }> {
    const before: RawFrame[] = [];
    for (;;) {
      const f = await this.next(timeoutMs);
      if (f.opcode !== OPCODE.CLOSE) {
        before.push(f);
        continue;
      }
      this.socket.end();
      return { code: f.payload.readUInt16BE(0), reason: f.payload.subarray(2).toString('utf8'), before };
    }
  }

  /** Resolves once the server has closed the TCP connection. */
  async gone(timeoutMs = 10_000): Promise<void> {
    await this.until(() => this.ended, 'the server closing the TCP connection', timeoutMs);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private parse(): void {
    if (!this.upgraded) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buf.subarray(0, end).toString('latin1');
      if (!head.startsWith('HTTP/1.1 101')) {
        this.refused = head.split('\r\n')[0];
        return;
      }
      this.upgraded = true;
      this.buf = this.buf.subarray(end + 4);
    }
    for (;;) {
      if (this.buf.length < 2) return;
      let len = this.buf[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      if (this.buf.length < off + len) return;
      const b0 = this.buf[0]!;
      this.frames.push({ fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, payload: this.buf.subarray(off, off + len) });
      this.buf = this.buf.subarray(off + len);
    }
  }

  private async until(ready: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!ready()) {
      if (this.refused !== undefined) throw new Error(`upgrade refused (${this.refused}) before ${what}`);
      if (this.ended && !ready()) throw new Error(`connection closed before ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          this.wake = undefined;
          resolve();
        };
      });
    }
  }
}
