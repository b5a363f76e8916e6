import { describe, expect, it } from 'vitest';
import type { BlockBackend } from '../../src/nbd/block-backend.js';
import { ByteQueue } from '../../src/nbd/byte-queue.js';
import { Handshake } from '../../src/nbd/handshake.js';
import { StaticExports } from '../../src/nbd/export-registry.js';
import { DEFAULT_NBD_LIMITS } from '../../src/nbd/limits.js';

const backend = { size: 1 << 30 } as BlockBackend; // the handshake only reads the size
const exports = new StaticExports([{ name: 'exp', description: 'd', readOnly: false, backend }]);

function session(): { feed: (hex: string) => ReturnType<Handshake['feed']>; sent: () => string } {
  const out: Buffer[] = [];
  const h = new Handshake(exports, DEFAULT_NBD_LIMITS, (b) => out.push(Buffer.from(b)));
  const q = new ByteQueue();
  return {
    feed: (hex) => {
      q.push(Buffer.from(hex.replace(/\s+/g, ''), 'hex'));
      return h.feed(q);
    },
    sent: () => Buffer.concat(out.splice(0)).toString('hex'),
  };
}

const OPT = '49484156454f5054';
const REP = '0003e889045565a9';

describe('NBD handshake, byte for byte', () => {
  it('greets with NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE|NO_ZEROES', () => {
    expect(Handshake.greeting().toString('hex')).toBe('4e42444d41474943' + OPT + '0003');
  });

  it('answers GO with BLOCK_SIZE 512/4096/32M and INFO_EXPORT, then ACK (the spec example)', () => {
    const s = session();
    const r = s.feed(`00000003 ${OPT} 00000007 0000000b 00000003 657870 0001 0003`);
    expect(r.state).toBe('transmission');
    expect(s.sent()).toBe(
      // INFO_BLOCK_SIZE: type 3, min 512, preferred 4096, max 32 MiB
      `${REP}00000007000000030000000e0003000002000000100002000000` +
        // INFO_EXPORT: type 0, size 1 GiB, flags HAS_FLAGS|FLUSH|FUA|TRIM|WRITE_ZEROES|MULTI_CONN|CACHE
        `${REP}00000007000000030000000c00000000000040000000056d` +
        `${REP}000000070000000100000000`,
    );
  });

  it('pads EXPORT_NAME with 124 zeroes unless NO_ZEROES was agreed', () => {
    const plain = session();
    expect(plain.feed(`00000001 ${OPT} 00000001 00000003 657870`).state).toBe('transmission');
    const sent = plain.sent();
    expect(sent.length / 2).toBe(8 + 2 + 124);
    expect(sent.slice(0, 16)).toBe('0000000040000000');
    const noz = session();
    noz.feed(`00000003 ${OPT} 00000001 00000003 657870`);
    expect(noz.sent().length / 2).toBe(10);
  });

  it('refuses STARTTLS, STRUCTURED_REPLY, META_CONTEXT and EXTENDED_HEADERS with ERR_UNSUP and keeps going', () => {
    const s = session();
    s.feed('00000003');
    for (const opt of [5, 8, 9, 10, 11, 99]) {
      const o = opt.toString(16).padStart(8, '0');
      expect(s.feed(`${OPT} ${o} 00000000`).state).toBe('more');
      const reply = s.sent();
      expect(reply.slice(0, 16)).toBe(REP);
      expect(reply.slice(16, 24)).toBe(o);
      expect(reply.slice(24, 32)).toBe('80000001');
    }
  });

  it('lists exports once each and ACKs; LIST with data is ERR_INVALID', () => {
    const s = session();
    s.feed(`00000003 ${OPT} 00000003 00000000`);
    expect(s.sent()).toBe(`${REP}0000000300000002${'00000008'}00000003657870${'64'}${REP}000000030000000100000000`);
    s.feed(`${OPT} 00000003 00000001 ff`);
    expect(s.sent().slice(24, 32)).toBe('80000003');
  });

  it('answers an unknown export under GO with ERR_UNKNOWN and a message', () => {
    const s = session();
    expect(s.feed(`00000003 ${OPT} 00000007 00000008 00000002 6e6f 0000`).state).toBe('more');
    const reply = s.sent();
    expect(reply.slice(24, 32)).toBe('80000006');
    expect(Buffer.from(reply.slice(40), 'hex').toString()).toContain('no export named "no"');
  });

  it('answers INFO without entering transmission', () => {
    const s = session();
    expect(s.feed(`00000003 ${OPT} 00000006 00000009 00000003 657870 0000`).state).toBe('more');
    expect(s.sent()).toContain(`${REP}000000060000000100000000`);
  });

  it('rejects GO payloads whose counts do not add up, without closing', () => {
    const s = session();
    expect(s.feed(`00000003 ${OPT} 00000007 00000009 000000ff 657870 0000`).state).toBe('more');
    expect(s.sent().slice(24, 32)).toBe('80000003');
    expect(s.feed(`${OPT} 00000007 00000009 00000003 657870 0001`).state).toBe('more');
    expect(s.sent().slice(24, 32)).toBe('80000003');
  });

  it('closes on unknown client flags, bad option magic and oversized options', () => {
    expect(session().feed('00000004').state).toBe('close');
    expect(session().feed('00000003 0102030405060708 00000007 00000000').state).toBe('close');
    expect(session().feed(`00000003 ${OPT} 00000007 7fffffff`).state).toBe('close');
  });

  it('ABORT is acknowledged, then the connection closes', () => {
    const s = session();
    expect(s.feed(`00000003 ${OPT} 00000002 00000000`).state).toBe('close');
    expect(s.sent()).toBe(`${REP}000000020000000100000000`);
  });

  it('waits for more bytes when a message arrives in pieces', () => {
    const s = session();
    expect(s.feed('0000').state).toBe('more');
    expect(s.feed(`0003 ${OPT} 0000`).state).toBe('more');
    expect(s.feed('0007 00000009 0000').state).toBe('more');
    expect(s.feed('0003 657870 0000').state).toBe('transmission');
  });
});
