import type { ByteQueue } from './byte-queue.js';
import {
  ClientFlag,
  HandshakeFlag,
  IHAVEOPT,
  Info,
  NBDMAGIC,
  Opt,
  OPTION_REPLY_MAGIC,
  Rep,
  TxFlag,
} from './constants.js';
import type { ExportRegistry, NbdExport } from './export-registry.js';
import type { NbdServerLimits } from './limits.js';

/** Block-size constraints advertised in INFO_BLOCK_SIZE. */
const PREFERRED_BLOCK = 4096;

type HandshakeResult =
  | { readonly state: 'more' }
  | { readonly state: 'close'; readonly reason: string }
  | {
      readonly state: 'transmission';
      readonly export: NbdExport;
      readonly flags: number;
      readonly blockSizeNegotiated: boolean;
    };

/** Minimum block size of an export: 512 when the size allows it, else byte granularity. */
export function minimumBlock(size: number): number {
  return size % 512 === 0 ? 512 : 1;
}

function transmissionFlags(e: NbdExport): number {
  let flags =
    TxFlag.HAS_FLAGS |
    TxFlag.SEND_FLUSH |
    TxFlag.SEND_FUA |
    TxFlag.SEND_TRIM |
    TxFlag.SEND_WRITE_ZEROES |
    TxFlag.SEND_CACHE;
  // One backend instance serves every connection and flush drains it as a whole, so FLUSH on any
  // connection covers writes completed on all of them.
  flags |= TxFlag.CAN_MULTI_CONN;
  if (e.readOnly) flags |= TxFlag.READ_ONLY;
  return flags;
}

/**
 * Fixed-newstyle option haggling (NBD spec, "Fixed newstyle negotiation"). Pure protocol: it reads
 * from a queue and writes through `send`; it never touches a socket or storage.
 */
export class Handshake {
  private stage: 'client-flags' | 'options' = 'client-flags';
  private noZeroes = false;
  private options = 0;

  constructor(
    private readonly exports: ExportRegistry,
    private readonly limits: NbdServerLimits,
    private readonly send: (buf: Buffer) => void,
  ) {}

  static greeting(): Buffer {
    const b = Buffer.alloc(18);
    b.writeBigUInt64BE(NBDMAGIC, 0);
    b.writeBigUInt64BE(IHAVEOPT, 8);
    b.writeUInt16BE(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES, 16);
    return b;
  }

  /** Consumes as many complete messages as the queue holds. */
  feed(q: ByteQueue): HandshakeResult {
    for (;;) {
      if (this.stage === 'client-flags') {
        if (q.length < 4) return { state: 'more' };
        const flags = q.take(4).readUInt32BE(0);
        if ((flags & ~(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES)) !== 0) {
          return { state: 'close', reason: `unknown client flags 0x${flags.toString(16)}` };
        }
        this.noZeroes = (flags & ClientFlag.NO_ZEROES) !== 0;
        this.stage = 'options';
        continue;
      }
      if (q.length < 16) return { state: 'more' };
      const head = q.peek(16);
      if (head.readBigUInt64BE(0) !== IHAVEOPT) return { state: 'close', reason: 'bad option magic' };
      const option = head.readUInt32BE(8);
      const length = head.readUInt32BE(12);
      if (length > this.limits.maxOptionBytes) {
        return { state: 'close', reason: `option ${option} payload of ${length} bytes exceeds maxOptionBytes` };
      }
      if (q.length < 16 + length) return { state: 'more' };
      q.skip(16);
      const payload = q.take(length);
      if (++this.options > this.limits.maxOptions) {
        return { state: 'close', reason: `more than ${this.limits.maxOptions} options in one handshake` };
      }
      const result = this.option(option, payload);
      if (result !== undefined) return result;
    }
  }

  private option(option: number, payload: Buffer): HandshakeResult | undefined {
    switch (option) {
      case Opt.EXPORT_NAME:
        return this.exportName(payload);
      case Opt.ABORT:
        this.reply(option, Rep.ACK);
        return { state: 'close', reason: 'client aborted the handshake' };
      case Opt.LIST:
        if (payload.length !== 0) return this.error(option, Rep.ERR_INVALID, 'LIST takes no data');
        for (const e of this.exports.list()) {
          const name = Buffer.from(e.name, 'utf8');
          const desc = Buffer.from(e.description, 'utf8');
          const body = Buffer.alloc(4 + name.length + desc.length);
          body.writeUInt32BE(name.length, 0);
          name.copy(body, 4);
          desc.copy(body, 4 + name.length);
          this.reply(option, Rep.SERVER, body);
        }
        this.reply(option, Rep.ACK);
        return undefined;
      case Opt.INFO:
      case Opt.GO:
        return this.infoOrGo(option, payload);
      case Opt.STARTTLS:
        return this.error(option, Rep.ERR_UNSUP, 'TLS is not enabled on this server');
      default:
        // STRUCTURED_REPLY, META_CONTEXT, EXTENDED_HEADERS, withdrawn and unknown options.
        return this.error(option, Rep.ERR_UNSUP, `option ${option} is not supported`);
    }
  }

  private exportName(payload: Buffer): HandshakeResult {
    const e = this.exports.get(payload.toString('utf8'));
    // EXPORT_NAME cannot carry an error: closing is the only refusal.
    if (e === undefined) return { state: 'close', reason: 'EXPORT_NAME for an unknown export' };
    const flags = transmissionFlags(e);
    const b = Buffer.alloc(this.noZeroes ? 10 : 134);
    b.writeBigUInt64BE(BigInt(e.backend.size), 0);
    b.writeUInt16BE(flags, 8);
    this.send(b);
    return { state: 'transmission', export: e, flags, blockSizeNegotiated: false };
  }

  private infoOrGo(option: number, payload: Buffer): HandshakeResult | undefined {
    if (payload.length < 6) return this.error(option, Rep.ERR_INVALID, 'INFO/GO payload too short');
    const nameLen = payload.readUInt32BE(0);
    if (nameLen > 4096 || 4 + nameLen + 2 > payload.length) {
      return this.error(option, Rep.ERR_INVALID, 'export name length does not fit the payload');
    }
    const name = payload.toString('utf8', 4, 4 + nameLen);
    const nInfo = payload.readUInt16BE(4 + nameLen);
    if (payload.length !== 4 + nameLen + 2 + 2 * nInfo) {
      return this.error(option, Rep.ERR_INVALID, 'information request count does not match the payload');
    }
    const requested = new Set<number>();
    for (let i = 0; i < nInfo; i++) requested.add(payload.readUInt16BE(4 + nameLen + 2 + 2 * i));
    const e = this.exports.get(name);
    if (e === undefined) return this.error(option, Rep.ERR_UNKNOWN, `no export named "${name}"`);

    if (requested.has(Info.NAME)) this.info(option, Info.NAME, Buffer.from(e.name, 'utf8'));
    if (requested.has(Info.DESCRIPTION)) this.info(option, Info.DESCRIPTION, Buffer.from(e.description, 'utf8'));
    const blockSizeNegotiated = requested.has(Info.BLOCK_SIZE);
    if (blockSizeNegotiated) {
      const bs = Buffer.alloc(12);
      bs.writeUInt32BE(minimumBlock(e.backend.size), 0);
      bs.writeUInt32BE(PREFERRED_BLOCK, 4);
      bs.writeUInt32BE(this.limits.maxPayloadBytes, 8);
      this.info(option, Info.BLOCK_SIZE, bs);
    }
    const flags = transmissionFlags(e);
    const ex = Buffer.alloc(10);
    ex.writeBigUInt64BE(BigInt(e.backend.size), 0);
    ex.writeUInt16BE(flags, 8);
    this.info(option, Info.EXPORT, ex);
    this.reply(option, Rep.ACK);
    if (option === Opt.INFO) return undefined;
    return { state: 'transmission', export: e, flags, blockSizeNegotiated };
  }

  private info(option: number, type: number, body: Buffer): void {
    const b = Buffer.alloc(2 + body.length);
    b.writeUInt16BE(type, 0);
    body.copy(b, 2);
    this.reply(option, Rep.INFO, b);
  }

  private error(option: number, rep: number, message: string): undefined {
    this.reply(option, rep, Buffer.from(message, 'utf8'));
    return undefined;
  }

  private reply(option: number, type: number, body: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(20 + body.length);
    h.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(type, 12);
    h.writeUInt32BE(body.length, 16);
    body.copy(h, 20);
    this.send(h);
  }
}
