import { GroupCode, PeerError } from './group-codes.js';

/** Bytes of a frame's length prefix (big-endian, the body's length). */
export const FRAME_HEADER_BYTES = 4;

/** A frame on a peer link: 4-byte big-endian length, then the body. */
export function encodeFrame(body: Buffer): Buffer {
  const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

/**
 * Cuts a peer's byte stream into frame bodies. The size limit is checked on the length prefix,
 * before any of the body is buffered, so a peer cannot make this member hold more than the limit.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /** @param maxBytes largest body accepted; may be raised later (after authentication). */
  constructor(public maxBytes: number) {}

  /** Adds bytes; returns the whole frames they complete. Throws SR_GROUP_LIMIT on an oversized frame. */
  push(data: Buffer): Buffer[] {
    this.chunks.push(data);
    this.buffered += data.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered < FRAME_HEADER_BYTES) break;
      const head = this.chunks.length === 1 ? this.chunks[0]! : this.flatten();
      const length = head.readUInt32BE(0);
      if (length > this.maxBytes)
        throw new PeerError(GroupCode.LIMIT, `frame of ${length} bytes exceeds the limit of ${this.maxBytes}`);
      if (this.buffered < FRAME_HEADER_BYTES + length) break;
      const all = this.flatten();
      out.push(all.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + length));
      const rest = all.subarray(FRAME_HEADER_BYTES + length);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.buffered = rest.length;
    }
    return out;
  }

  private flatten(): Buffer {
    if (this.chunks.length !== 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!;
  }
}
